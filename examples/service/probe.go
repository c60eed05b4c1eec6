package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"medmesh/examples/clinical"
)

// probe makes one call to each --calls target and logs its outcome
// (message "probe": the gRPC code, the instance that answered, the SPIFFE
// ID the server presented), without serving or registering. The demo uses
// it to show a caller with a valid SVID but no intention being refused.
//
// Only answers the mesh gives on purpose count: while the xDS resources
// or the certificates are still arriving a call may fail as Unavailable,
// so it is repeated until another answer comes or the probe's time is
// up.
func probe(ctx context.Context, o *options, log *slog.Logger) error {
	var errs []error
	for _, target := range o.calls {
		if err := probeOne(ctx, log, target); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", target, err))
		}
	}
	return errors.Join(errs...)
}

func probeOne(ctx context.Context, log *slog.Logger, target string) error {
	cc, err := dialMesh(target)
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(ctx, warmUp)
	defer cancel()
	waitReady(ctx, cc)
	kinds := recordKinds[target]
	if len(kinds) == 0 {
		kinds = []string{"Record"}
	}
	for {
		var p peer.Peer
		cctx, ccancel := context.WithTimeout(ctx, callTimeout)
		inst, err := clinical.Fetch(cctx, cc, kinds[0], grpc.Peer(&p))
		ccancel()
		code := status.Code(err)
		settled := code != codes.Unavailable && code != codes.DeadlineExceeded
		if settled || ctx.Err() != nil {
			attrs := []any{"target", target, "code", code.String(), "server_id", serverID(&p)}
			if err != nil {
				attrs = append(attrs, "err", status.Convert(err).Message())
			} else {
				attrs = append(attrs, "answered_by", inst)
			}
			log.Info("probe", attrs...)
			if !settled {
				return fmt.Errorf("no answer from the mesh within %s: %w", warmUp, err)
			}
			return nil
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// serverID is the SPIFFE ID in the certificate the server presented, or
// "plaintext".
func serverID(p *peer.Peer) string {
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.PeerCertificates) == 0 {
		return plaintextCaller
	}
	id, err := x509svid.IDFromCert(ti.State.PeerCertificates[0])
	if err != nil {
		return "certificate without a SPIFFE ID"
	}
	return id.String()
}
