'use strict';
// A proxyless grpc-js xDS server (XdsServer, gRFC A36) of the clinical
// service for the Go interop tests: it binds argv[2] (IP:port, e.g.
// 0.0.0.0:18551 or [::]:18551), answers Fetch with its instance name
// (argv[3]) and reports {"event":"serving"} once the control plane's
// listener for that address arrived. A stdin line {"failing":true} makes it
// answer UNAVAILABLE until {"failing":false}. argv[4] "xds" uses xDS
// credentials (mTLS and authorization from the control plane).

const grpc = require('@grpc/grpc-js');
const xds = require('@grpc/grpc-js-xds');
const {encodeString, decodeString, emit, onCrash, commands} = require('./common');

onCrash();
xds.register();

const [address, instance, credsKind] = process.argv.slice(2);
if (!address || !instance) {
  console.error('usage: node server.js IP:PORT INSTANCE');
  process.exit(2);
}
let failing = false;
let calls = 0;

const server = new xds.XdsServer();
server.addService({
  Fetch: {
    path: '/medmesh.examples.Clinical/Fetch', requestStream: false, responseStream: false,
    requestSerialize: encodeString, requestDeserialize: decodeString,
    responseSerialize: encodeString, responseDeserialize: decodeString,
  },
}, {
  Fetch: (call, callback) => {
    calls++;
    if (failing) {
      callback({code: grpc.status.UNAVAILABLE, details: 'instance draining'});
      return;
    }
    callback(null, instance);
  },
});
const creds = credsKind === 'xds' ?
  new xds.XdsServerCredentials(grpc.ServerCredentials.createInsecure()) : grpc.ServerCredentials.createInsecure();
server.bindAsync(address, creds, (err, port) => {
  if (err) {
    emit({event: 'error', error: String(err)});
    return;
  }
  emit({event: 'serving', port});
});
commands((cmd) => {
  if ('failing' in cmd) failing = !!cmd.failing;
  emit({event: 'ack', failing, calls});
}, () => {
  server.forceShutdown();
  process.exit(0);
});
