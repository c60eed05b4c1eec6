'use strict';
// A proxyless grpc-js client of xds:///<target> (argv[2]), driven by the Go
// interop tests: each stdin line {"id":..,"calls":N,"headers":{..}} makes N
// sequential calls on one channel, kept open for the whole run, and
// answers {"id":..,"served":{instance:count},"errors":{message:count}}.
// The bootstrap comes from GRPC_XDS_BOOTSTRAP, as for any Node service;
// argv[3] "xds" uses xDS credentials (mTLS as the control plane says, with
// the bootstrap's certificate provider), "insecure" (the default) does not.

const grpc = require('@grpc/grpc-js');
const xds = require('@grpc/grpc-js-xds');
const {METHOD, encodeString, decodeString, emit, onCrash, commands} = require('./common');

onCrash();
xds.register();

const target = process.argv[2];
if (!target) {
  console.error('usage: node client.js SERVICE');
  process.exit(2);
}
const creds = process.argv[3] === 'xds' ?
  new xds.XdsChannelCredentials(grpc.credentials.createInsecure()) : grpc.credentials.createInsecure();
const client = new grpc.Client(`xds:///${target}`, creds);

function call(headers, deadlineMs) {
  return new Promise((resolve) => {
    const md = new grpc.Metadata();
    for (const [k, v] of Object.entries(headers || {})) md.set(k, v);
    client.makeUnaryRequest(METHOD, encodeString, decodeString, 'Observation', md,
      {deadline: Date.now() + deadlineMs}, (err, instance) => resolve(err ? {err} : {instance}));
  });
}

// Commands run one at a time, in order.
let queue = Promise.resolve();
commands((cmd) => {
  queue = queue.then(async () => {
    const served = {};
    const errors = {};
    for (let i = 0; i < (cmd.calls || 0); i++) {
      const r = await call(cmd.headers, cmd.deadlineMs || 5000);
      if (r.err) {
        const key = `${grpc.status[r.err.code] || r.err.code}: ${r.err.details}`;
        errors[key] = (errors[key] || 0) + 1;
      } else {
        served[r.instance] = (served[r.instance] || 0) + 1;
      }
    }
    emit({id: cmd.id, served, errors});
  });
}, () => {
  client.close();
  process.exit(0);
});
emit({event: 'ready'});
