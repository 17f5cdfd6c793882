// Graceful shutdown on SIGINT/SIGTERM, once. Later signals are ignored rather than left to their
// default action: a signal to the process group (Ctrl-C in a terminal, `kill -- -PGID`, an init
// that signals the group) reaches the replicas as well as the target, whose supervisor then sends
// them SIGTERM again — with a one-shot handler that second signal killed a replica before its
// final checkpoint.

export function onShutdownSignals(shutdown: (signal: NodeJS.Signals) => void, repeated?: (signal: NodeJS.Signals) => void): void {
  let started = false;
  const handle = (signal: NodeJS.Signals): void => {
    if (started) {
      repeated?.(signal);
      return;
    }
    started = true;
    shutdown(signal);
  };
  process.on('SIGINT', handle);
  process.on('SIGTERM', handle);
}
