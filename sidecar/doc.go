// Package sidecar will hold the Envoy ext_proc extension that classifies
// and tags PHI flows and queues requests by clinical priority, and the same
// core as net/http and gRPC middleware for proxyless services.
package sidecar
