// Build step after tsc: files tsc does not emit but the runtime loads (the gRPC .proto files).
import { copyFileSync, mkdirSync, readdirSync } from 'node:fs';

for (const dir of ['replica', 'management']) {
  const from = `src/protocol/${dir}`;
  const to = `dist/src/protocol/${dir}`;
  mkdirSync(to, { recursive: true });
  for (const f of readdirSync(from)) if (f.endsWith('.proto')) copyFileSync(`${from}/${f}`, `${to}/${f}`);
}
