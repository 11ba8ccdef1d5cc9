"""The PolicyPack `pulumi up --policy-pack policies/pulumi` runs: a thin adapter over antenna_policies.rules.

Creating the PolicyPack starts a gRPC server and blocks, so nothing imports this module but Pulumi itself.
"""

from __future__ import annotations

from antenna_policies.rules import RESOURCE_RULES, STACK_RULES, Resource, ResourceRule, StackRule
from pulumi_policy import (
    EnforcementLevel,
    PolicyPack,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)


def _resource_policy(name: str, description: str, rule: ResourceRule) -> ResourceValidationPolicy:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        for message in rule(Resource(type=args.resource_type, name=args.name, urn=args.urn, props=args.props)):
            report_violation(message, args.urn)

    return ResourceValidationPolicy(name=name, description=description, validate=validate)


def _stack_policy(name: str, description: str, rule: StackRule) -> StackValidationPolicy:
    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        resources = [
            Resource(
                type=r.resource_type,
                name=r.name,
                urn=r.urn,
                props=r.props,
                deps={key: tuple(dep.urn for dep in deps) for key, deps in r.property_dependencies.items()},
            )
            for r in args.resources
        ]
        for message in rule(resources):
            report_violation(message, None)

    return StackValidationPolicy(name=name, description=description, validate=validate)


PolicyPack(
    name="antenna",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=[
        *(_resource_policy(name, desc, rule) for name, (desc, rule) in RESOURCE_RULES.items()),
        *(_stack_policy(name, desc, rule) for name, (desc, rule) in STACK_RULES.items()),
    ],
)
