// maintenance-window (JavaScript): allow installs only inside a daily window (UTC), read
// from the WASI wall clock.
//
// The same hook as the Rust example in plugins/maintenance-window, built with
// componentize-js.
//
// Setting window = "HH:MM-HH:MM" (UTC; may wrap past midnight, for example
// 22:00-06:00). Outside it, pre-install vetoes with DISP_E_EXCEPTION and says when the
// window opens. Without the setting every install is vetoed: a window plugin that
// nobody configured must not let installs through.

import { log, setting } from 'vmguest:plugin/host@0.2.0';

function minutes(text) {
  const m = /^(\d+):(\d+)$/.exec(text.trim());
  if (!m) return undefined;
  const [h, min] = [Number(m[1]), Number(m[2])];
  return h <= 24 && min < 60 && h * 60 + min <= 24 * 60 ? h * 60 + min : undefined;
}

function hhmm(minute) {
  const pad = (n) => String(n).padStart(2, '0');
  return `${pad(Math.floor(minute / 60))}:${pad(minute % 60)}`;
}

// A thrown plain object is the `err` case of the export's result; a thrown Error traps.
function veto(message) {
  return { error: 'unexpected', message };
}

export const installHooks = {
  preInstall(ctx) {
    const window = setting('window');
    if (window === undefined) throw veto('no maintenance window configured (setting `window`)');
    const [startText, endText, ...rest] = window.split('-');
    const start = minutes(startText ?? '');
    const end = minutes(endText ?? '');
    if (rest.length > 0 || start === undefined || end === undefined) {
      throw veto(`window "${window}" is not HH:MM-HH:MM`);
    }
    const now = Math.floor(Date.now() / 60000) % (24 * 60);
    const inside = start <= end ? start <= now && now < end : now >= start || now < end;
    if (!inside) {
      throw veto(
        `outside the maintenance window ${window} UTC (now ${hhmm(now)} UTC); ` +
          `it opens at ${hhmm(start)} UTC`,
      );
    }
    log('info', `${ctx.vm.name}: inside the window ${window} UTC (now ${hhmm(now)})`);
  },

  postInstall(_ctx, _outcome) {},
};
