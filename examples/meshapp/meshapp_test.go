package meshapp

import (
	"context"
	"net"
	"strings"
	"testing"

	"google.golang.org/grpc/peer"

	"medmesh/controlplane/bootstrap"
)

// A bootstrap written for another instance must be refused: the server
// would never get its inbound listener.
func TestCheckNodeID(t *testing.T) {
	b, err := bootstrap.Proxyless(bootstrap.Options{XDSAddress: "127.0.0.1:15010", NodeID: "emr-1", Service: "emr"})
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckNodeID(b, "emr-1"); err != nil {
		t.Errorf("matching node ID: %v", err)
	}
	if err := CheckNodeID(b, "emr-2"); err == nil || !strings.Contains(err.Error(), "emr-1") {
		t.Errorf("mismatched node ID: got %v, want an error naming emr-1", err)
	}
}

// Without TLS peer information a caller is reported as plaintext, never
// as an identity; a call that reached no server says so.
func TestCallerIDWithoutCertificate(t *testing.T) {
	if got := CallerID(context.Background()); got != PlaintextCaller {
		t.Errorf("CallerID without a peer: %q", got)
	}
	ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}})
	if got := CallerID(ctx); got != PlaintextCaller {
		t.Errorf("CallerID of a plaintext peer: %q", got)
	}
	if got := PeerID(&peer.Peer{}); !strings.HasPrefix(got, "none") {
		t.Errorf("PeerID of a call that reached no server: %q", got)
	}
}
