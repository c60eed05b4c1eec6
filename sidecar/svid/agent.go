// Package svid keeps a workload's SPIFFE identity fresh. Its agent asks
// the control plane for the workload's X.509-SVID and trust bundle over
// SDS (on an ADS stream, as an Envoy does, so the control plane attests
// and rotates it the same way) and hands every new pair to the workload:
// as files where a proxyless gRPC application's certificate provider reads
// them, and through the SPIFFE Workload API it serves on a unix socket.
// `medmesh sidecar --svid-dir / --workload-api` runs it.
package svid

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/structpb"

	"medmesh/api/wire"
	"medmesh/certs"
	"medmesh/internal/backoff"
)

// Options configure the agent.
type Options struct {
	XDSAddress string
	NodeID     string
	Service    string
	Dir        string
	// The workload's proof of identity to the control plane, one of: a
	// one-time join token; a projected Kubernetes service-account token
	// (the file is read again on every connection, as the kubelet
	// rotates it); a Consul ACL token that may write the service.
	JoinToken    string
	K8sTokenFile string
	ConsulToken  string
	// WorkloadAPI, when set, is told of every new SVID (see ServeWorkloadAPI).
	WorkloadAPI *WorkloadAPI
	Logger      *slog.Logger
	// OnWrite is called after each SVID is written (tests, metrics).
	OnWrite func(svid *x509svid.SVID)
}

// Agent is a configured agent, not yet running. New and Run are apart so
// that `medmesh sidecar` can refuse bad options before it serves anything
// else, while the agent itself runs for the life of the process.
type Agent struct {
	o    Options
	conn *grpc.ClientConn
	log  *slog.Logger
}

// New checks o and prepares the connection to the control plane (no
// network traffic yet). The errors name the flags of `medmesh sidecar`,
// whose options these are.
func New(o Options) (*Agent, error) {
	if (o.Dir == "" && o.WorkloadAPI == nil) || o.NodeID == "" || o.Service == "" {
		return nil, errors.New("sidecar: --node-id, --service and --svid-dir or --workload-api are required")
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	conn, err := grpc.NewClient(o.XDSAddress, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("sidecar: --xds-address %q: %w", o.XDSAddress, err)
	}
	return &Agent{o: o, conn: conn, log: log}, nil
}

// Run keeps Dir (and the Workload API) holding the workload's current
// SVID and bundle until ctx ends, reconnecting with backoff when the
// stream breaks. Files are replaced atomically; a response that does not
// parse or verify is NACKed and the files keep their last good content.
// Run closes the connection when it returns; an Agent runs once.
func (a *Agent) Run(ctx context.Context) {
	defer a.conn.Close()
	bo := backoff.Backoff{Min: 200 * time.Millisecond, Max: 10 * time.Second}
	for ctx.Err() == nil {
		err := a.o.stream(ctx, a.conn, a.log, &bo)
		if ctx.Err() != nil {
			return
		}
		a.log.Warn("SVID stream ended; reconnecting", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(bo.Next()):
		}
	}
}

// Run is New then Agent.Run: it returns New's error, or nil when ctx ends.
func Run(ctx context.Context, o Options) error {
	a, err := New(o)
	if err != nil {
		return err
	}
	a.Run(ctx)
	return nil
}

func (o Options) stream(ctx context.Context, conn *grpc.ClientConn, log *slog.Logger, bo *backoff.Backoff) error {
	ctx, err := o.withProof(ctx)
	if err != nil {
		return err
	}
	s, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return err
	}
	names := []string{wire.SVIDSecret, wire.BundleSecret}
	req := &discoveryv3.DiscoveryRequest{
		Node: &corev3.Node{Id: o.NodeID, Cluster: o.Service, Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{
			wire.NodeMetaProxyKind: structpb.NewStringValue(string(wire.ProxySVIDAgent)),
		}}},
		TypeUrl: resource.SecretType, ResourceNames: names,
	}
	if err := s.Send(req); err != nil {
		return err
	}
	version := ""
	for {
		resp, err := s.Recv()
		if err != nil {
			return err
		}
		bo.Reset()
		ack := &discoveryv3.DiscoveryRequest{TypeUrl: resource.SecretType, ResourceNames: names, ResponseNonce: resp.GetNonce()}
		svid, werr := o.write(resp)
		if werr != nil {
			log.Error("rejecting SVID update; keeping the files as they are", "err", werr)
			ack.VersionInfo = version
			ack.ErrorDetail = &status.Status{Code: 3, Message: werr.Error()}
		} else {
			version = resp.GetVersionInfo()
			ack.VersionInfo = version
			if svid != nil {
				log.Info("SVID written", "spiffeID", svid.ID.String(), "dir", o.Dir,
					"notAfter", svid.Certificates[0].NotAfter.UTC().Format(time.RFC3339))
				if o.OnWrite != nil {
					o.OnWrite(svid)
				}
			}
		}
		if err := s.Send(ack); err != nil {
			return err
		}
	}
}

// withProof attaches the workload's proof of identity to the stream.
func (o Options) withProof(ctx context.Context) (context.Context, error) {
	switch {
	case o.K8sTokenFile != "":
		b, err := os.ReadFile(o.K8sTokenFile)
		if err != nil {
			return ctx, fmt.Errorf("service-account token: %w", err)
		}
		return metadata.AppendToOutgoingContext(ctx, wire.K8sTokenHeader, strings.TrimSpace(string(b))), nil
	case o.ConsulToken != "":
		return metadata.AppendToOutgoingContext(ctx, wire.ConsulACLHeader, o.ConsulToken), nil
	case o.JoinToken != "":
		return metadata.AppendToOutgoingContext(ctx, wire.JoinTokenHeader, o.JoinToken), nil
	}
	return ctx, nil
}

// write parses, verifies and writes the SVID and bundle of a response.
func (o Options) write(resp *discoveryv3.DiscoveryResponse) (*x509svid.SVID, error) {
	var certPEM, keyPEM, bundlePEM []byte
	for _, a := range resp.GetResources() {
		sec := &tlsv3.Secret{}
		if err := a.UnmarshalTo(sec); err != nil {
			return nil, fmt.Errorf("decoding a secret: %w", err)
		}
		switch sec.GetName() {
		case wire.SVIDSecret:
			certPEM = sec.GetTlsCertificate().GetCertificateChain().GetInlineBytes()
			keyPEM = sec.GetTlsCertificate().GetPrivateKey().GetInlineBytes()
		case wire.BundleSecret:
			bundlePEM = sec.GetValidationContext().GetTrustedCa().GetInlineBytes()
		}
	}
	if certPEM == nil || bundlePEM == nil {
		return nil, nil // not issued yet (identity not proven); nothing to write
	}
	svid, err := x509svid.Parse(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("SVID: %w", err)
	}
	bundle, err := x509bundle.Parse(svid.ID.TrustDomain(), bundlePEM)
	if err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, bundle); err != nil {
		return nil, fmt.Errorf("SVID does not verify against the bundle: %w", err)
	}
	if o.Dir != "" {
		if err := certs.WriteSVIDDir(o.Dir, svid, bundle); err != nil {
			return nil, err
		}
	}
	if o.WorkloadAPI != nil {
		o.WorkloadAPI.Update(svid, bundle)
	}
	return svid, nil
}
