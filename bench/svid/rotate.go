package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"medmesh/api/wire"
	"medmesh/internal/consulagent"
	"medmesh/internal/procstat"
	"medmesh/internal/simproxy"
)

// rotation measures how long the control plane takes to re-issue and push
// the SVIDs of n connected Envoy proxies (POST /ca/renew-svids, the same
// work as n half-life renewals at once), and its CPU time for it. The
// control plane runs as its own process (bin/medmesh) so that its CPU time
// is not mixed with the simulated proxies'.
func rotation(ctx context.Context, medmesh string, n, services int) error {
	dir, err := os.MkdirTemp("", "medmesh-rotate-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	catalog := filepath.Join(dir, "catalog.yaml")
	if err := os.WriteFile(catalog, []byte(rotationCatalog(n, services)), 0o600); err != nil {
		return err
	}
	xdsPort, err := consulagent.FreePort()
	if err != nil {
		return err
	}
	adminPort, err := consulagent.FreePort()
	if err != nil {
		return err
	}
	xdsAddr, admin := "127.0.0.1:"+strconv.Itoa(xdsPort), "http://127.0.0.1:"+strconv.Itoa(adminPort)
	logf, err := os.Create(filepath.Join(dir, "controlplane.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	// --dev: the simulated proxies are on loopback and carry no proof;
	// attestation is not what this measures.
	cmd := exec.CommandContext(ctx, medmesh, "controlplane", "--consul=", "--catalog", catalog, "--mtls", "--dev",
		"--state-dir", filepath.Join(dir, "state"), "--xds-listen", xdsAddr, "--admin-listen", "127.0.0.1:"+strconv.Itoa(adminPort),
		"--log-level", "warn")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
	if err := poll(ctx, time.Minute, func() bool { return httpOK(admin+"/readyz", http.MethodGet) }); err != nil {
		return fmt.Errorf("control plane not ready (log %s): %w", logf.Name(), err)
	}

	// One connection per hundred proxies, as sidecars on a few nodes.
	var conns []*grpc.ClientConn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	proxies := make([]*simproxy.Proxy, n)
	for i := range proxies {
		if i%100 == 0 {
			c, err := grpc.NewClient(xdsAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				return err
			}
			conns = append(conns, c)
		}
		svc := fmt.Sprintf("svc-%d", i%services)
		proxies[i], err = simproxy.Start(ctx, conns[len(conns)-1], simproxy.Options{NodeID: fmt.Sprintf("%s-%d", svc, i), Cluster: svc, Delta: true})
		if err != nil {
			return err
		}
	}
	before := make([]string, n)
	if err := poll(ctx, 5*time.Minute, func() bool {
		for i, p := range proxies {
			if before[i] == "" {
				before[i] = svidFingerprint(p)
			}
			if before[i] == "" {
				return false
			}
		}
		return true
	}); err != nil {
		return fmt.Errorf("waiting for every proxy's first SVID: %w", err)
	}

	cpu0, err := procstat.Read(cmd.Process.Pid)
	if err != nil {
		return err
	}
	start := time.Now()
	if !httpOK(admin+"/ca/renew-svids", http.MethodPost) {
		return fmt.Errorf("POST /ca/renew-svids failed")
	}
	rotated := 0
	if err := poll(ctx, 5*time.Minute, func() bool {
		rotated = 0
		for i, p := range proxies {
			if f := svidFingerprint(p); f != "" && f != before[i] {
				rotated++
			}
		}
		return rotated == n
	}); err != nil {
		return fmt.Errorf("%d of %d proxies got a new SVID: %w", rotated, n, err)
	}
	elapsed := time.Since(start)
	cpu1, err := procstat.Read(cmd.Process.Pid)
	if err != nil {
		return err
	}
	cpu := (cpu1.CPU - cpu0.CPU).Seconds()
	// At the default 1 h lifetime each SVID is renewed every 30 minutes:
	// n renewals per 1,800 s, each costing what one of these did.
	const renewEvery = 30 * 60
	fmt.Printf("rotated the SVIDs of %d connected proxies (%d services) in %s; control plane CPU %.2f s\n",
		n, services, elapsed.Round(time.Millisecond), cpu)
	fmt.Printf("BENCH svid_rotate_%d_s=%.3f\n", n, elapsed.Seconds())
	fmt.Printf("BENCH svid_rotate_%d_cpu_s=%.3f\n", n, cpu)
	fmt.Printf("BENCH svid_rotation_steady_cpu_s_per_s=%.5f   (%d proxies, 1 h SVIDs renewed every 30 min: rotate CPU / %d s)\n",
		cpu/renewEvery, n, renewEvery)
	return nil
}

// rotationCatalog is a YAML catalog of services with n instances in all,
// one per simulated proxy.
func rotationCatalog(n, services int) string {
	var b strings.Builder
	b.WriteString("services:\n")
	for s := 0; s < services; s++ {
		fmt.Fprintf(&b, "- name: svc-%d\n  kind: emr\n  protocol: http\n  instances:\n", s)
		for i := s; i < n; i += services {
			fmt.Fprintf(&b, "  - id: svc-%d-%d\n    address: 10.%d.%d.%d\n    port: 8080\n", s, i, 1+i/65536, (i/256)%256, i%256)
		}
	}
	return b.String()
}

// svidFingerprint identifies the SVID a proxy holds; empty if none yet.
func svidFingerprint(p *simproxy.Proxy) string {
	sec, ok := p.Resource(resource.SecretType, wire.SVIDSecret).(*tlsv3.Secret)
	if !ok {
		return ""
	}
	sum := sha256.Sum256(sec.GetTlsCertificate().GetCertificateChain().GetInlineBytes())
	return string(sum[:])
}

func httpOK(url, method string) bool {
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// poll checks cond every 10 ms until it holds or limit passes.
func poll(ctx context.Context, limit time.Duration, cond func() bool) error {
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("gave up after %s", limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}
