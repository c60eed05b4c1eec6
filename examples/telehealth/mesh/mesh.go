// Package mesh is what the telehealth programs need to be proxyless
// workloads of medmesh: their xDS bootstrap, xDS credentials on both
// sides (mTLS with the SVID `medmesh sidecar --svid-dir` keeps fresh),
// and a Consul registration with a TTL check. It follows
// examples/service, which explains each step.
package mesh

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"

	"medmesh/controlplane/bootstrap"
)

const (
	bootstrapEnv = "GRPC_XDS_BOOTSTRAP"
	ownedEnv     = "MEDMESH_TELEHEALTH_OWNED_BOOTSTRAP"
)

// EnsureBootstrap makes sure grpc-go finds the workload's xDS bootstrap.
// grpc-go reads GRPC_XDS_BOOTSTRAP once, before main runs, so when it is
// unset this writes the bootstrap and re-executes the program with it
// set (and does not return). args are appended on re-execution (to pin
// a port chosen at start). The returned path is removed by the caller
// when owned.
func EnsureBootstrap(o bootstrap.Options, args ...string) (path string, owned bool, err error) {
	if p := os.Getenv(bootstrapEnv); p != "" {
		b, err := os.ReadFile(p)
		if err != nil {
			return "", false, fmt.Errorf("%s: %w", bootstrapEnv, err)
		}
		var bs bootstrap.GRPCBootstrap
		if err := json.Unmarshal(b, &bs); err != nil {
			return "", false, fmt.Errorf("%s %s: %w", bootstrapEnv, p, err)
		}
		if bs.Node.ID != o.NodeID {
			return "", false, fmt.Errorf("%s %s: node.id is %q but the instance ID is %q; they must be the same (the Consul service ID)", bootstrapEnv, p, bs.Node.ID, o.NodeID)
		}
		return p, os.Getenv(ownedEnv) == p, nil
	}
	b, err := bootstrap.Proxyless(o)
	if err != nil {
		return "", false, err
	}
	f, err := os.CreateTemp("", "medmesh-bootstrap-"+o.NodeID+"-*.json")
	if err != nil {
		return "", false, err
	}
	_, werr := f.Write(b)
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	exe, err := os.Executable()
	if werr != nil || err != nil {
		os.Remove(f.Name())
		return "", false, fmt.Errorf("writing the xDS bootstrap: %w", errorsJoin(werr, err))
	}
	env := append(os.Environ(), bootstrapEnv+"="+f.Name(), ownedEnv+"="+f.Name())
	err = syscall.Exec(exe, append(append([]string{}, os.Args...), args...), env)
	os.Remove(f.Name())
	return "", false, fmt.Errorf("re-executing with %s set: %w", bootstrapEnv, err)
}

func errorsJoin(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// ServerCredentials are xDS server credentials: the control plane sends
// the security config (the SVID, a required client certificate, RBAC
// from intentions); plaintext only when it sends none (--mtls=false).
func ServerCredentials() (credentials.TransportCredentials, error) {
	return xdscreds.NewServerCredentials(xdscreds.ServerOptions{FallbackCreds: insecure.NewCredentials()})
}

// Dial returns a proxyless client of xds:///<service> with xDS
// credentials.
func Dial(service string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	creds, err := xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		return nil, err
	}
	return grpc.NewClient("xds:///"+service, append([]grpc.DialOption{grpc.WithTransportCredentials(creds)}, opts...)...)
}

// Registration is an instance in Consul with a TTL check the process
// keeps passing; it starts critical, so nobody is routed to it before
// it serves.
type Registration struct {
	c       *api.Client
	id      string
	checkID string
	ttl     time.Duration
	log     *slog.Logger
	cancel  context.CancelFunc
	done    chan struct{}
	once    sync.Once
}

// Register adds reg to the Consul agent at addr (retrying while the agent
// starts) with a critical TTL check.
func Register(ctx context.Context, addr string, reg *api.AgentServiceRegistration, ttl time.Duration, log *slog.Logger) (*Registration, error) {
	cfg := api.DefaultConfig()
	cfg.Address = addr
	cfg.HttpClient = &http.Client{Timeout: 5 * time.Second}
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("consul %q: %w", addr, err)
	}
	r := &Registration{c: c, id: reg.ID, checkID: "medmesh-ttl-" + reg.ID, ttl: ttl, log: log}
	reg.Check = &api.AgentServiceCheck{CheckID: r.checkID, Name: "heartbeat from " + reg.ID, TTL: ttl.String(),
		Status: api.HealthCritical, DeregisterCriticalServiceAfter: "1m"}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if err = c.Agent().ServiceRegister(reg); err == nil {
			log.Info("registered in Consul", "service", reg.Name, "id", reg.ID)
			return r, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("registering %s in Consul at %s: %w", reg.ID, addr, err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// Passing marks the instance passing and keeps it so, three updates per
// TTL, until Deregister.
func (r *Registration) Passing() {
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel, r.done = cancel, make(chan struct{})
	go func() {
		defer close(r.done)
		t := time.NewTicker(r.ttl / 3)
		defer t.Stop()
		for {
			if err := r.c.Agent().UpdateTTL(r.checkID, "serving", api.HealthPassing); err != nil {
				r.log.Warn("cannot update the Consul health check", "err", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
}

// Deregister stops the heartbeat and removes the instance; safe to call
// more than once.
func (r *Registration) Deregister() {
	r.once.Do(func() {
		if r.cancel != nil {
			r.cancel()
			<-r.done
		}
		if err := r.c.Agent().ServiceDeregister(r.id); err != nil {
			r.log.Warn("cannot deregister from Consul", "err", err)
			return
		}
		r.log.Info("deregistered from Consul", "id", r.id)
	})
}
