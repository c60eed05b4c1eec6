// Package integration holds medmesh's end-to-end tests: a real Consul
// agent, the control plane in-process, grpc-go's real xDS client and server
// as the proxyless data plane, and simulated Envoys over SotW and delta.
package integration
