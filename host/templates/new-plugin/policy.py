"""{{name}}: an iso-policy plugin for vmguest (see README.md)."""

from wit_world import exports
from wit_world.imports import host
from wit_world.imports.types import (
    ContractError,
    Level,
    PolicyContext,
    PolicyDecision,
    PolicyDecision_Defer,
    PolicyDecision_Refuse,
    Refusal,
)


class IsoPolicy(exports.IsoPolicy):
    def choose(self, ctx: PolicyContext) -> PolicyDecision:
        # Refuse VMs whose name starts with the `protect-prefix` setting.
        prefix = host.setting("protect-prefix") or ""
        if prefix and ctx.vm.name.startswith(prefix):
            message = f"{ctx.vm.name} is protected from IC installs"
            return PolicyDecision_Refuse(Refusal(ContractError.UNEXPECTED, message))
        # Otherwise keep the built-in choice.
        if ctx.default_choice is not None:
            chosen = ctx.candidates[ctx.default_choice]
            host.log(Level.INFO, f"{ctx.vm.name}: keeping {chosen.path}")
        return PolicyDecision_Defer()
