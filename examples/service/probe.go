package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"medmesh/examples/clinical"
	"medmesh/examples/meshapp"
)

// probe makes one call to each --calls target and logs its outcome
// (message "probe": the gRPC code, the instance that answered, the SPIFFE
// ID the server presented), without serving or registering. The demo uses
// it to show a caller with a valid SVID but no intention being refused.
//
// Only answers the mesh gives on purpose count: while the xDS resources
// or the certificates are still arriving a call may fail as Unavailable,
// so it is repeated until another answer comes or --probe-wait is up;
// then the last Unavailable is the outcome (logged with settled=false:
// the mesh may be holding the target back on purpose, as residency does).
// It fails only when it could not call at all.
func probe(ctx context.Context, o *options, log *slog.Logger) error {
	var errs []error
	for _, target := range o.calls {
		if err := probeOne(ctx, log, target, o.probeWait); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", target, err))
		}
	}
	return errors.Join(errs...)
}

func probeOne(ctx context.Context, log *slog.Logger, target string, wait time.Duration) error {
	cc, err := meshapp.Dial(target)
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	cc.Connect()
	kinds := recordKinds[target]
	if len(kinds) == 0 {
		kinds = []string{"Record"}
	}
	// The outcome is the last call's, unless it only ran out of time: a
	// call cut short by the probe's deadline says less than an earlier
	// Unavailable with the mesh's reason.
	var (
		outErr error
		outP   peer.Peer
		inst   string
	)
	for {
		var p peer.Peer
		cctx, ccancel := context.WithTimeout(ctx, callTimeout)
		served, err := clinical.Fetch(cctx, cc, kinds[0], grpc.Peer(&p))
		ccancel()
		code := status.Code(err)
		if code != codes.DeadlineExceeded || outErr == nil {
			outErr, outP, inst = err, p, served
		}
		settled := code != codes.Unavailable && code != codes.DeadlineExceeded
		if settled || ctx.Err() != nil {
			code = status.Code(outErr)
			attrs := []any{"target", target, "code", code.String(), "settled", settled, "server_id", meshapp.PeerID(&outP)}
			if outErr != nil {
				attrs = append(attrs, "err", status.Convert(outErr).Message())
			} else {
				attrs = append(attrs, "answered_by", inst)
			}
			log.Info("probe", attrs...)
			return nil
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}
