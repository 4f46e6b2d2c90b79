// {{name}}: an install-hooks plugin for vmguest (see README.md).

import { log, setting } from 'vmguest:plugin/host@0.2.0';

export const installHooks = {
  preInstall(ctx) {
    // Settings that are not strings arrive as JSON text: `freeze = true` gives "true".
    if (setting('freeze') === 'true') {
      // A thrown plain object is the `err` case of the result; a thrown Error traps.
      throw { error: 'unexpected', message: `installs are frozen; ${ctx.vm.name} is left alone` };
    }
    log('info', `${ctx.vm.name}: install allowed`);
  },

  postInstall(ctx, outcome) {
    // Throwing a string here makes the outcome DISP_E_EXCEPTION naming this plugin.
    log('info', `${ctx.vm.name}: ${outcome.name} (${outcome.message})`);
  },
};
