// Package certs will hold medmesh's SPIFFE CA: X.509-SVID issuing and
// rotation with go-spiffe types, trust bundles, and the SDS secrets served
// to proxies. Transport sockets are attached in one place
// (controlplane/translate/transport.go) so mTLS slots in there.
package certs
