"""CrossGuard policy pack for the gateway stacks (``pulumi preview --policy-pack stacks/policy``)."""
