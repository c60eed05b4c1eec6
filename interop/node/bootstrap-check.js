'use strict';
// Runs grpc-js-xds's own bootstrap validator (the one every grpc-js xDS
// channel and XdsServer runs first) on the file GRPC_XDS_BOOTSTRAP names,
// and prints {"ok":true} or {"ok":false,"error":...}.

const {emit} = require('./common');
const {loadBootstrapInfo} = require('@grpc/grpc-js-xds/build/src/xds-bootstrap');

try {
  const info = loadBootstrapInfo();
  emit({ok: true, node: info.node.id, serverTemplate: info.serverListenerResourceNameTemplate,
    certificateProviders: Object.keys(info.certificateProviders)});
} catch (e) {
  emit({ok: false, error: String(e.message || e)});
}
