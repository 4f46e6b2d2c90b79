// {{name}}: an iso-policy plugin for vmguest (see README.md).

import { log, setting } from 'vmguest:plugin/host@0.2.0';

export const isoPolicy = {
  choose(ctx) {
    // Refuse VMs whose name starts with the `protect-prefix` setting.
    const prefix = setting('protect-prefix') ?? '';
    if (prefix && ctx.vm.name.startsWith(prefix)) {
      const message = `${ctx.vm.name} is protected from IC installs`;
      return { tag: 'refuse', val: { error: 'unexpected', message } };
    }
    // Otherwise keep the built-in choice.
    if (ctx.defaultChoice !== undefined) {
      log('info', `${ctx.vm.name}: keeping ${ctx.candidates[ctx.defaultChoice].path}`);
    }
    return { tag: 'defer' };
  },
};
