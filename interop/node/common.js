'use strict';
// Shared by the interop scripts: the clinical service's one method, its
// messages (google.protobuf.StringValue, written out by hand so that no
// generated code or .proto loading is needed), and the JSON-lines protocol
// the Go tests read on stdout.

const METHOD = '/medmesh.examples.Clinical/Fetch';

// StringValue is field 1, wire type 2 (length-delimited).
function encodeString(s) {
  const body = Buffer.from(s, 'utf8');
  const len = [];
  let n = body.length;
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n > 0) b |= 0x80;
    len.push(b);
  } while (n > 0);
  return body.length === 0 ? Buffer.alloc(0) : Buffer.concat([Buffer.from([0x0a, ...len]), body]);
}

function decodeString(buf) {
  if (buf.length === 0) return '';
  if (buf[0] !== 0x0a) throw new Error(`StringValue: unexpected tag ${buf[0]}`);
  let i = 1;
  let len = 0;
  let shift = 0;
  for (;;) {
    const b = buf[i++];
    len |= (b & 0x7f) << shift;
    if ((b & 0x80) === 0) break;
    shift += 7;
  }
  return buf.subarray(i, i + len).toString('utf8');
}

// emit writes one JSON line for the Go test.
function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

// onCrash reports an uncaught exception (grpc-js throws from timers, which
// otherwise kills the process with the reason only on stderr) as a JSON
// line, then exits non-zero as Node would have.
function onCrash() {
  const crash = (e) => {
    emit({event: 'crash', error: String(e && e.stack ? e.stack : e)});
    process.exit(70);
  };
  process.on('uncaughtException', crash);
  process.on('unhandledRejection', crash);
}

// commands calls handle for every JSON line read from stdin; the process
// ends when stdin closes (the Go test exits or closes it).
function commands(handle, onEnd) {
  let buf = '';
  process.stdin.setEncoding('utf8');
  process.stdin.on('data', (chunk) => {
    buf += chunk;
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (line.trim() !== '') handle(JSON.parse(line));
    }
  });
  process.stdin.on('end', onEnd);
}

module.exports = {METHOD, encodeString, decodeString, emit, onCrash, commands};
