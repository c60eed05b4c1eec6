package main

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"time"
)

// instance is one example service instance the demo runs.
type instance struct {
	id, service string
	calls       []string
	port        int   // chosen once, kept across restarts
	proc        *proc // current process; nil while stopped by the story
	// sidecar is the instance's `medmesh sidecar --svid-dir`: it runs
	// for the whole demo, across the story's restarts of the instance,
	// as a workload's identity agent outlives a restart of its app.
	sidecar  *proc
	svidDir  string
	spiffeID string // as issued and verified at start
}

// exampleServices are the Consul service names the demo registers.
var exampleServices = map[string]bool{"emr": true, "his": true, "imaging": true}

// newInstances is the demo's small hospital: two EMR and two imaging
// instances that call each other (an EMR links imaging studies, imaging
// looks up the ordering encounter) and one HIS that calls both.
func newInstances() []*instance {
	return []*instance{
		{id: "imaging-1", service: "imaging", calls: []string{"emr"}},
		{id: "imaging-2", service: "imaging", calls: []string{"emr"}},
		{id: "emr-1", service: "emr", calls: []string{"imaging"}},
		{id: "emr-2", service: "emr", calls: []string{"imaging"}},
		{id: "his-1", service: "his", calls: []string{"emr", "imaging"}},
	}
}

// step is one scripted event, at a multiple of the demo's step length
// after the mesh is up.
type step struct {
	at   int // in steps
	say  string
	what func(ctx context.Context, d *demo) error
}

// story first has a caller without an intention refused, so the run
// shows that identities are checked and not just encrypted, then makes
// services come and go so the status table and the traffic show the mesh
// following the registry. It repeats every storyLength steps for as long
// as the demo runs.
var story = []step{
	{0, "billing-1 calls emr once. It proves it is 'billing' (join token, SVID from its own sidecar), but no Consul intention allows billing -> emr, " +
		"and EMR is a PHI service: default deny. Watch: the call is refused with PermissionDenied after a successful mTLS handshake.",
		func(ctx context.Context, d *demo) error { d.deniedCall(ctx); return nil }},
	{1, "emr-2 stops (SIGTERM). It leaves Consul first and keeps serving for a moment, so callers move to emr-1 without failed calls. " +
		"Watch: emr-2 leaves the status table; 'answered by' shows only emr-1.",
		func(ctx context.Context, d *demo) error { return d.stopInstance("emr-2") }},
	{2, "emr-2 starts again. It registers (check critical), gets its inbound listener over xDS, turns its check passing, and callers use it again. " +
		"Watch: emr-2 back in the table, new EDS versions, traffic spread over emr-1 and emr-2.",
		func(ctx context.Context, d *demo) error { return d.startInstance(d.instance("emr-2")) }},
	{3, "imaging-2 fails its health check (SIGUSR1: it reports its TTL check critical). It keeps running and stays connected to the control plane, " +
		"but medmesh stops sending it calls. Watch: Consul health shows imaging-2 CRITICAL; only imaging-1 answers.",
		func(ctx context.Context, d *demo) error { return d.signalInstance("imaging-2", syscall.SIGUSR1) }},
	{4, "imaging-2 recovers (SIGUSR2: check passing again). Watch: imaging-2 answers calls again.",
		func(ctx context.Context, d *demo) error { return d.signalInstance("imaging-2", syscall.SIGUSR2) }},
}

// storyLength is one round of the story, in steps; the pause after the
// last event lets its effect show before the next round.
const storyLength = 5

// storyClock yields the events of the repeating story in order.
type storyClock struct {
	stepLen time.Duration
	round   int
	next    int
}

// nextEvent returns the next step and when it is due, relative to the
// moment the mesh came up.
func (s *storyClock) nextEvent() (step, time.Duration) {
	st := story[s.next]
	at := time.Duration(s.round*storyLength+st.at) * s.stepLen
	s.next++
	if s.next == len(story) {
		s.next, s.round = 0, s.round+1
	}
	return st, at
}

func (d *demo) instance(id string) *instance {
	for _, in := range d.instances {
		if in.id == id {
			return in
		}
	}
	panic("demo: no instance " + id) // the story names only known instances
}

func (d *demo) stopInstance(id string) error {
	in := d.instance(id)
	if in.proc == nil {
		return fmt.Errorf("%s is not running", id)
	}
	err := d.sup.stop(in.proc, 10*time.Second)
	in.proc = nil
	return err
}

func (d *demo) signalInstance(id string, sig syscall.Signal) error {
	in := d.instance(id)
	if in.proc == nil {
		return fmt.Errorf("%s is not running", id)
	}
	return d.sup.signal(in.proc, sig)
}

// startInstance starts (or restarts, on the same port and ID) one service
// instance.
func (d *demo) startInstance(in *instance) error {
	args := []string{
		"--service", in.service, "--id", in.id, "--port", fmt.Sprint(in.port),
		"--consul", "http://" + d.consul.Addr(), "--xds-address", d.xdsAddr,
		"--interval", d.cfg.callInterval.String(), "--report", "1s",
		"--svid-dir", in.svidDir, "--log-format", "json",
	}
	if len(in.calls) > 0 {
		args = append(args, "--calls", strings.Join(in.calls, ","))
	}
	p, err := d.sup.start(in.id, d.cfg.serviceBin, args...)
	if err != nil {
		return err
	}
	in.proc = p
	calls := "nothing"
	if len(in.calls) > 0 {
		calls = strings.Join(in.calls, ", ")
	}
	d.out.printf("started %-9s pid=%d  serves 127.0.0.1:%d  calls %s", in.id, p.pid(), in.port, calls)
	return nil
}
