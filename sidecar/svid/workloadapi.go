package svid

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	workloadpb "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// WorkloadAPI serves the SPIFFE Workload API (X.509 part) on a unix
// socket, so applications using go-spiffe's workloadapi get their SVID and
// bundle from `medmesh sidecar` directly and are told of every rotation.
// The socket is the trust boundary: it is created mode 0600 in a directory
// only the workload can reach (a pod's shared volume), which is how the
// sidecar knows who is asking.
type WorkloadAPI struct {
	workloadpb.UnimplementedSpiffeWorkloadAPIServer

	mu      sync.Mutex
	svid    *x509svid.SVID
	bundle  *x509bundle.Bundle
	changed chan struct{} // closed and replaced on every update
}

// NewWorkloadAPI returns a server with no SVID yet; calls wait for one.
func NewWorkloadAPI() *WorkloadAPI { return &WorkloadAPI{changed: make(chan struct{})} }

// Update publishes a new SVID and bundle to every open stream.
func (w *WorkloadAPI) Update(svid *x509svid.SVID, bundle *x509bundle.Bundle) {
	w.mu.Lock()
	w.svid, w.bundle = svid, bundle
	close(w.changed)
	w.changed = make(chan struct{})
	w.mu.Unlock()
}

func (w *WorkloadAPI) current() (*x509svid.SVID, *x509bundle.Bundle, <-chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.svid, w.bundle, w.changed
}

// checkHeader enforces the Workload API's security header, which stops a
// browser or a proxied request from reaching the socket by accident.
func checkHeader(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("workload.spiffe.io"); len(v) != 1 || v[0] != "true" {
		return status.Error(codes.InvalidArgument, "security header missing from request")
	}
	return nil
}

// FetchX509SVID implements the Workload API.
func (w *WorkloadAPI) FetchX509SVID(_ *workloadpb.X509SVIDRequest, s grpc.ServerStreamingServer[workloadpb.X509SVIDResponse]) error {
	if err := checkHeader(s.Context()); err != nil {
		return err
	}
	for {
		svid, bundle, changed := w.current()
		if svid != nil {
			resp, err := x509Response(svid, bundle)
			if err != nil {
				return status.Error(codes.Internal, err.Error())
			}
			if err := s.Send(resp); err != nil {
				return err
			}
		}
		select {
		case <-s.Context().Done():
			return nil
		case <-changed:
		}
	}
}

// FetchX509Bundles implements the Workload API.
func (w *WorkloadAPI) FetchX509Bundles(_ *workloadpb.X509BundlesRequest, s grpc.ServerStreamingServer[workloadpb.X509BundlesResponse]) error {
	if err := checkHeader(s.Context()); err != nil {
		return err
	}
	for {
		_, bundle, changed := w.current()
		if bundle != nil {
			if err := s.Send(&workloadpb.X509BundlesResponse{Bundles: map[string][]byte{
				bundle.TrustDomain().IDString(): concatDER(bundle.X509Authorities()),
			}}); err != nil {
				return err
			}
		}
		select {
		case <-s.Context().Done():
			return nil
		case <-changed:
		}
	}
}

func x509Response(svid *x509svid.SVID, bundle *x509bundle.Bundle) (*workloadpb.X509SVIDResponse, error) {
	key, err := x509.MarshalPKCS8PrivateKey(svid.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("encoding the SVID key: %w", err)
	}
	return &workloadpb.X509SVIDResponse{Svids: []*workloadpb.X509SVID{{
		SpiffeId:    svid.ID.String(),
		X509Svid:    concatDER(svid.Certificates),
		X509SvidKey: key,
		Bundle:      concatDER(bundle.X509Authorities()),
	}}}, nil
}

func concatDER(certs []*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, c.Raw...)
	}
	return out
}

// ServeWorkloadAPI serves w on the unix socket at addr ("unix:///path" or
// a path) until ctx ends.
func ServeWorkloadAPI(ctx context.Context, addr string, w *WorkloadAPI) error {
	path := strings.TrimPrefix(addr, "unix://")
	if path == "" || !strings.HasPrefix(path, "/") {
		return fmt.Errorf("sidecar: --workload-api %q: want unix:///absolute/path", addr)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("sidecar: --workload-api: %w", err)
	}
	lis, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("sidecar: --workload-api: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		lis.Close()
		return fmt.Errorf("sidecar: --workload-api: %w", err)
	}
	g := grpc.NewServer()
	workloadpb.RegisterSpiffeWorkloadAPIServer(g, w)
	go func() {
		<-ctx.Done()
		g.Stop()
	}()
	return g.Serve(lis)
}
