// The flags every test launches Debian's Chromium with (relay_call.mjs, script_lib.mjs).

export const CHROMIUM_ARGS = [
  // Root in a container: Chromium's sandbox needs user namespaces we may not have.
  '--no-sandbox',
  // No GPU on a CI box: software video, no GPU process probing.
  '--disable-gpu',
  // Nothing but the call on the network, and only to loopback.
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  // Shared memory in /tmp, not /dev/shm: a container's /dev/shm is often 64 MB, too small for
  // video. (Debian's /usr/bin/chromium wrapper means to add this itself when /dev/shm is
  // small, but its test breaks when findmnt prints more than one line.)
  '--disable-dev-shm-usage',
  // Lets Chromium gather on the loopback interface too. Where another interface is up it
  // reaches 127.0.0.1 from that one anyway (one allocation per interface, so two per peer
  // connection with this flag), but in a network namespace with only `lo` (a sandboxed CI job)
  // it would gather nothing at all without it: checked with `unshare -n`.
  '--allow-loopback-in-peer-connection',
  // A synthetic camera and microphone, granted without a prompt.
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
];
