"""Pulumi entry point; the program lives in the stacks package."""

from stacks.program import main

main()
