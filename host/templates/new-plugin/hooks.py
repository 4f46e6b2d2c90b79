"""{{name}}: an install-hooks plugin for vmguest (see README.md)."""

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host
from wit_world.imports.types import ContractError, InstallContext, InstallOutcome, Level, Refusal


class InstallHooks(exports.InstallHooks):
    def pre_install(self, ctx: InstallContext) -> None:
        # Settings that are not strings arrive as JSON text: `freeze = true` gives "true".
        if host.setting("freeze") == "true":
            message = f"installs are frozen; {ctx.vm.name} is left alone"
            raise Err(Refusal(ContractError.UNEXPECTED, message))
        host.log(Level.INFO, f"{ctx.vm.name}: install allowed")

    def post_install(self, ctx: InstallContext, outcome: InstallOutcome) -> None:
        # Raising Err("text") here makes the outcome DISP_E_EXCEPTION naming this plugin.
        host.log(Level.INFO, f"{ctx.vm.name}: {outcome.name} ({outcome.message})")
