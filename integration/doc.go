// Package integration holds medmesh's end-to-end tests: a real Consul
// agent, the control plane in-process, grpc-go's real xDS client and server
// and Node's grpc-js with grpc-js-xds (interop_test.go, scripts in
// interop/node) as the proxyless data planes, and simulated Envoys over
// SotW and delta.
package integration
