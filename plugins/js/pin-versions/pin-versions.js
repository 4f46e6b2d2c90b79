// pin-versions (JavaScript): pin the IC version per guest OS, and deny known-bad releases.
//
// The same policy as the Rust example in plugins/pin-versions, built with
// componentize-js.
//
// Settings (all optional):
// - "pin.windows", "pin.linux", "pin.unknown": family@version, for example
//   "pin.windows" = "virtio-win@0.1.262". A pinned version that is not among the
//   candidates refuses the install with HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND).
// - deny: comma-separated family@version. If the built-in choice is denied, the newest
//   candidate of the same family that is not denied is chosen instead.

import { log, setting } from 'vmguest:plugin/host@0.2.0';

/** family@version pairs from a comma-separated list. */
function pairs(text) {
  return text
    .split(',')
    .map((item) => item.trim().split('@'))
    .filter((parts) => parts.length === 2)
    .map(([family, version]) => [family.trim(), version.trim()]);
}

function isRelease(c, family, version) {
  return c.usable && c.family === family && c.version === version;
}

/** Compare versions: numeric per dotted component; text after a dash sorts below the release. */
function compareVersions(a, b) {
  const [ra, pa] = [a.split('-')[0], a.includes('-')];
  const [rb, pb] = [b.split('-')[0], b.includes('-')];
  const na = ra.split('.').map((n) => parseInt(n, 10) || 0);
  const nb = rb.split('.').map((n) => parseInt(n, 10) || 0);
  for (let i = 0; i < Math.max(na.length, nb.length); i++) {
    if (i >= na.length) return -1;
    if (i >= nb.length) return 1;
    if (na[i] !== nb[i]) return na[i] - nb[i];
  }
  return (pa ? 0 : 1) - (pb ? 0 : 1);
}

function refuse(message) {
  return { tag: 'refuse', val: { error: 'file-not-found', message } };
}

export const isoPolicy = {
  choose(ctx) {
    const guest = ctx.guest.kind;
    const pin = setting(`pin.${guest}`);
    if (pin !== undefined) {
      const pinned = pairs(pin);
      if (pinned.length === 0) return refuse(`pin.${guest} = "${pin}" is not family@version`);
      const [family, version] = pinned[0];
      const i = ctx.candidates.findIndex((c) => isRelease(c, family, version));
      if (i < 0) {
        return refuse(
          `${guest} guests are pinned to ${family} ${version}, ` +
            `which is not among the ${ctx.candidates.length} candidates`,
        );
      }
      log('info', `${guest} guests are pinned to ${family} ${version}`);
      return { tag: 'choose', val: i };
    }

    const deny = pairs(setting('deny') ?? '');
    const denied = (c) => deny.some(([f, v]) => isRelease(c, f, v));
    if (ctx.defaultChoice === undefined) return { tag: 'defer' };
    const chosen = ctx.candidates[ctx.defaultChoice];
    if (!denied(chosen)) return { tag: 'defer' };
    const family = chosen.family ?? '';
    const version = chosen.version ?? '';
    let best = -1;
    ctx.candidates.forEach((c, i) => {
      if (!c.usable || c.family !== family || denied(c)) return;
      const v = c.version ?? '0';
      if (best < 0 || compareVersions(v, ctx.candidates[best].version ?? '0') > 0) best = i;
    });
    if (best < 0) {
      return refuse(`${family} ${version} is denied and no other ${family} candidate is available`);
    }
    log('warn', `${family} ${version} is denied; using ${ctx.candidates[best].version ?? '?'}`);
    return { tag: 'choose', val: best };
  },
};
