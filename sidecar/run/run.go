// Package run assembles the `medmesh sidecar` process from the sidecar's
// packages: the PHI ext_proc extension (rules with their reloading, the
// scheduler, the audit trail, metrics, health endpoints), the SVID agent
// and the Workload API (sidecar/svid), the pod's Consul registration
// (sidecar/consulreg), and the order in which they start and stop.
// cmd/medmesh only turns flags into Options, so the process can be run
// and tested without parsing a command line.
//
// Errors name the command's flags: Options are those flags, and the
// operator who reads the error typed them.
package run

import (
	"context"
	"errors"
	"log/slog"

	"medmesh/sidecar/consulreg"
	"medmesh/sidecar/svid"
)

// Options are everything `medmesh sidecar` runs. Each part runs when its
// address is set; at least one of the extension and the SVID agent must.
type Options struct {
	// SVID configures the SVID agent, which runs when SVID.Dir or
	// WorkloadAPI is set. SVID.Service and SVID.NodeID name the workload
	// for every part: the extension's metrics and audit records and the
	// Consul registration too. Start sets SVID.WorkloadAPI, and
	// SVID.Logger when it is nil.
	SVID svid.Options
	// WorkloadAPI, when set, is the unix socket (unix:///path) on which
	// the SPIFFE Workload API is served.
	WorkloadAPI string
	// ExtProc configures the PHI extension, which runs when ExtProc.Listen
	// is set.
	ExtProc ExtProc
	// Namespace is the service's namespace: part of the extension's
	// SPIFFE identity and of the registration's meta.
	Namespace string
	// Register registers the workload in Consul when Register.Client is
	// set. Start fills in its Service, Namespace and Logger from the
	// fields above, so the instance is registered as what it serves.
	Register consulreg.Options
	Logger   *slog.Logger
}

func (o *Options) runsSVIDAgent() bool { return o.SVID.Dir != "" || o.WorkloadAPI != "" }

// Validate refuses options that run nothing. It reads no file and
// touches no network, so the command calls it before it builds anything
// else; Start calls it again.
func (o *Options) Validate() error {
	if o.ExtProc.Listen == "" && !o.runsSVIDAgent() {
		return errors.New("nothing to run: --extproc-listen is empty and neither --svid-dir nor --workload-api is set")
	}
	return nil
}

// Start starts the parts o asks for: the registration, then the
// extension, then the SVID agent and the Workload API. An error means
// nothing is left running (a registration already made is withdrawn
// before Start returns).
//
// The returned channel yields once, after every part has stopped: when
// ctx ends, when the SVID agent's Workload API fails, or (without the
// SVID agent) when the extension fails. It yields the extension's
// terminal error, or nil. The instance has left Consul by then, so a
// process that exits on it never leaves a registered instance behind.
func Start(ctx context.Context, o Options) (<-chan error, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	ctx, stop := context.WithCancel(ctx)
	deregistered := func() {}
	if o.Register.Client != nil {
		o.Register.Service, o.Register.Namespace, o.Register.Logger = o.SVID.Service, o.Namespace, log
		var err error
		if deregistered, err = startRegistration(ctx, o.Register); err != nil {
			stop()
			return nil, err
		}
	}
	var extprocDone <-chan error
	// fail stops what has started; the extension's own error, if any, is
	// dropped: the error that stopped the start is the one to report.
	fail := func(err error) (<-chan error, error) {
		stop()
		if extprocDone != nil {
			<-extprocDone
		}
		deregistered()
		return nil, err
	}
	if o.ExtProc.Listen != "" {
		var err error
		if extprocDone, err = startExtProc(ctx, o.ExtProc, o.SVID.Service, o.SVID.NodeID, o.Namespace, log); err != nil {
			return fail(err)
		}
	}
	var agent *svid.Agent
	if o.runsSVIDAgent() {
		if o.WorkloadAPI != "" {
			o.SVID.WorkloadAPI = svid.NewWorkloadAPI()
		}
		if o.SVID.Logger == nil {
			o.SVID.Logger = log
		}
		var err error
		if agent, err = svid.New(o.SVID); err != nil {
			return fail(err)
		}
		// Served once nothing can fail any more, so a failed start
		// leaves no server behind. Its own failure (a bad socket path)
		// ends the process like a signal.
		if o.WorkloadAPI != "" {
			go func() {
				if err := svid.ServeWorkloadAPI(ctx, o.WorkloadAPI, o.SVID.WorkloadAPI); err != nil {
					log.Error("workload API stopped", "err", err)
					stop()
				}
			}()
		}
	}
	done := make(chan error, 1)
	go func() {
		// With the SVID agent, the process lives as long as the agent
		// (until ctx ends or the Workload API fails), whatever becomes
		// of the extension; without it, as long as the extension.
		if agent != nil {
			agent.Run(ctx)
			stop()
		}
		var err error
		if extprocDone != nil {
			err = <-extprocDone
		}
		stop()
		deregistered()
		done <- err
	}()
	return done, nil
}

// startRegistration registers the instance and keeps its check current
// until ctx ends; the returned wait blocks until it is deregistered.
func startRegistration(ctx context.Context, r consulreg.Options) (wait func(), err error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- consulreg.Run(ctx, r) }()
	return func() {
		if err := <-done; err != nil {
			r.Logger.Error("Consul registration", "err", err)
		}
	}, nil
}
