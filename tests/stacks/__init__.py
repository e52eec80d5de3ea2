"""Tests of the Pulumi program, its render and its policy pack."""
