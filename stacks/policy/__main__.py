"""The policy pack: the validators as CrossGuard policies; it starts a gRPC server, never import it."""

from pulumi_policy import (
    EnforcementLevel,
    PolicyPack,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

# The pack runs from this directory alone, so the sibling module is imported top-level.
from validators import RESOURCE_CHECKS, STACK_CHECKS, Check, Resource


def _resource_policy(check: Check) -> ResourceValidationPolicy:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        for message in check.validate(Resource(args.resource_type, args.name, args.props, args.urn)):
            report_violation(message, args.urn)

    return ResourceValidationPolicy(name=check.name, description=check.description, validate=validate)


def _stack_policy(check: Check) -> StackValidationPolicy:
    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        resources = [
            Resource(r.resource_type, r.name, r.props, r.urn, frozenset(d.urn for d in r.dependencies))
            for r in args.resources
        ]
        for message in check.validate(resources):
            report_violation(message)

    return StackValidationPolicy(name=check.name, description=check.description, validate=validate)


PolicyPack(
    name="llm-gateway-invariants",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=[*map(_resource_policy, RESOURCE_CHECKS), *map(_stack_policy, STACK_CHECKS)],
)
