package deploy

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"medmesh/internal/consulagent"
)

// TestRenderedConsulPeers runs the Consul servers of the hub and of an
// edge site with the arguments the overlays render (a real Consul, the
// image's version; the binary from `make tools` or CONSUL_BIN), as the
// kubelet would start them: $(VAR) expanded from the container's env and
// the ConfigMap, the Secret consul-server-tls made as the README says,
// only addresses, ports and mount paths moved to this machine's loopback
// and temporary directories. Then it follows the README's steps with the
// consul CLI: a peering token at the hub carrying the address sites dial
// (-server-external-addresses, standing for the consul-peering load
// balancer), the peering established at the site, the site exporting a
// non-PHI service to the hub. The hub must see the peering ACTIVE with
// the site's name as the peer's datacenter (medmesh takes a peer's site
// from it) and import the exported service; an unexported PHI service
// stays at the site.
func TestRenderedConsulPeers(t *testing.T) {
	bin, err := consulagent.FindBinary()
	if err != nil {
		t.Fatalf("%v (Consul runs the rendered servers in this test)", err)
	}
	ca, err := consulagent.NewPeeringCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	hub := startRenderedConsul(ctx, t, bin, ca, "hub", render(t, filepath.Join("overlays", "hub")))
	site := startRenderedConsul(ctx, t, bin, ca, "clinic-a", renderSite(t, "clinic-a"))

	if err := site.client.Agent().ServiceRegisterOpts(&api.AgentServiceRegistration{
		Name: "scheduling", ID: "scheduling-1", Address: "10.1.0.7", Port: 8080, Meta: map[string]string{"medmesh-phi": "false"},
	}, api.ServiceRegisterOpts{}.WithContext(ctx)); err != nil {
		t.Fatal(err)
	}
	if err := site.client.Agent().ServiceRegisterOpts(&api.AgentServiceRegistration{
		Name: "emr", ID: "emr-1", Address: "10.1.0.8", Port: 8080, Meta: map[string]string{"medmesh-kind": "emr"},
	}, api.ServiceRegisterOpts{}.WithContext(ctx)); err != nil {
		t.Fatal(err)
	}

	// The port serves the Secret's certificate: the files are where the
	// -hcl says and Consul loaded them.
	roots := x509.NewCertPool()
	if b, err := os.ReadFile(filepath.Join(hub.secret, "ca.pem")); err != nil || !roots.AppendCertsFromPEM(b) {
		t.Fatalf("ca.pem: %v", err)
	}
	conn, err := tls.Dial("tcp", "127.0.0.1:"+strconv.Itoa(hub.grpcTLS), &tls.Config{RootCAs: roots, ServerName: "server.hub.consul", NextProtos: []string{"h2"}})
	if err != nil {
		t.Errorf("hub's gRPC TLS port does not present the certificate of Secret consul-server-tls: %v", err)
	} else {
		conn.Close()
	}

	// The README's steps.
	token := strings.TrimSpace(hub.cli(t, nil, "peering", "generate-token", "-name", "clinic-a",
		"-server-external-addresses", "127.0.0.1:"+strconv.Itoa(hub.grpcTLS)))
	site.cli(t, nil, "peering", "establish", "-name", "hub", "-peering-token", token)
	waitFor(ctx, t, site, "`consul peering read -name hub` to show ACTIVE", func() (struct{}, bool) {
		return struct{}{}, regexp.MustCompile(`State:\s+ACTIVE`).MatchString(site.cli(t, nil, "peering", "read", "-name", "hub"))
	})
	site.cli(t, strings.NewReader(`Kind = "exported-services"
Name = "default"
Services = [
  {
    Name      = "scheduling"
    Consumers = [{ Peer = "hub" }]
  }
]
`), "config", "write", "-")

	for _, side := range []struct {
		c          *renderedConsul
		peer, want string
	}{{hub, "clinic-a", "clinic-a"}, {site, "hub", "hub"}} {
		p := waitFor(ctx, t, side.c, "peering "+side.peer+" ACTIVE", func() (*api.Peering, bool) {
			p, _, err := side.c.client.Peerings().Read(ctx, side.peer, nil)
			return p, err == nil && p != nil && p.State == api.PeeringStateActive
		})
		if p.Remote.Datacenter != side.want {
			t.Errorf("%s: peering %s has the peer's datacenter %q, want %q", side.c.site, side.peer, p.Remote.Datacenter, side.want)
		}
	}
	q := (&api.QueryOptions{Peer: "clinic-a"}).WithContext(ctx)
	entries := waitFor(ctx, t, hub, "scheduling imported from clinic-a", func() ([]*api.ServiceEntry, bool) {
		e, _, err := hub.client.Health().Service("scheduling", "", false, q)
		return e, err == nil && len(e) == 1
	})
	if s := entries[0].Service; s.Address != "10.1.0.7" || s.Meta["medmesh-phi"] != "false" {
		t.Errorf("hub imports scheduling as %+v", s)
	}
	if e, _, err := hub.client.Health().Service("emr", "", false, q); err != nil || len(e) != 0 {
		t.Errorf("hub imports the site's unexported emr: %d instances, %v", len(e), err)
	}
}

// renderedConsul is a Consul server started from a rendered StatefulSet.
type renderedConsul struct {
	bin, site, log, secret string
	http, grpcTLS          int
	client                 *api.Client
	exited                 chan struct{} // closed when the process ends
}

func startRenderedConsul(ctx context.Context, t *testing.T, bin string, ca *consulagent.PeeringCA, site string, r rendered) *renderedConsul {
	t.Helper()
	ss := get[*appsv1.StatefulSet](t, r, "StatefulSet/"+ns+"/consul")
	c := ss.Spec.Template.Spec.Containers[0]
	if len(c.Args) == 0 || c.Args[0] != "agent" {
		t.Fatalf("Consul args %q: want `agent ...` (the image's entrypoint runs `consul agent` for them)", c.Args)
	}

	// The Secret consul-server-tls, made as the README says: the network's
	// Consul CA and this datacenter's server certificate.
	files, err := ca.ServerTLS(site)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	secret := filepath.Join(dir, "consul-server-tls")
	for key, from := range map[string]string{"ca.pem": files.CAFile, "server.pem": files.CertFile, "server-key.pem": files.KeyFile} {
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(secret, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(secret, key), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// Mounts move to temporary directories.
	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		switch m.Name {
		case "consul-tls":
			mounts[m.MountPath] = secret
		case "data":
			mounts[m.MountPath] = filepath.Join(dir, "data")
		default:
			t.Fatalf("Consul mounts volume %s, which this test does not provide", m.Name)
		}
	}
	env := containerEnv(t, r, c)
	rc := &renderedConsul{bin: bin, site: site, log: filepath.Join(dir, "consul.log"), secret: secret}
	ports := map[string]int{}
	for _, p := range []string{"http", "grpc-tls", "server", "serf-lan", "serf-wan"} {
		if ports[p], err = consulagent.FreePort(); err != nil {
			t.Fatal(err)
		}
	}
	rc.http, rc.grpcTLS = ports["http"], ports["grpc-tls"]
	var args []string
	for _, a := range c.Args {
		a = expand(t, a, env)
		for from, to := range mounts {
			a = strings.ReplaceAll(a, from, to)
		}
		switch {
		case a == "-client=0.0.0.0", a == "-bind=0.0.0.0":
			a = strings.Replace(a, "0.0.0.0", "127.0.0.1", 1)
		case a == "-grpc-tls-port=8503":
			a = "-grpc-tls-port=" + strconv.Itoa(rc.grpcTLS)
		}
		args = append(args, a)
	}
	// The pod's hostname, and ports of this machine's choosing.
	args = append(args, "-node=consul-0", "-dns-port=-1", "-grpc-port=-1", "-http-port="+strconv.Itoa(rc.http),
		"-server-port="+strconv.Itoa(ports["server"]), "-serf-lan-port="+strconv.Itoa(ports["serf-lan"]),
		"-serf-wan-port="+strconv.Itoa(ports["serf-wan"]))
	logf, err := os.Create(rc.log)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	rc.exited = make(chan struct{})
	go func() { _ = cmd.Wait(); close(rc.exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-rc.exited
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(rc.log)
			t.Logf("%s's Consul (%q) log:\n%s", site, args, tail(b, 3000))
		}
	})
	cfg := api.DefaultConfig()
	cfg.Address = "127.0.0.1:" + strconv.Itoa(rc.http)
	if rc.client, err = api.NewClient(cfg); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, rc, "a leader", func() (struct{}, bool) {
		resp, err := http.Get("http://" + cfg.Address + "/v1/status/leader")
		if err != nil {
			return struct{}{}, false
		}
		defer resp.Body.Close()
		var b [64]byte
		n, _ := resp.Body.Read(b[:])
		return struct{}{}, resp.StatusCode == http.StatusOK && n > 4
	})
	return rc
}

// containerEnv resolves c's env as the kubelet would, from literal values,
// the rendered ConfigMaps and the pod's IP (loopback here).
func containerEnv(t *testing.T, r rendered, c corev1.Container) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.ConfigMapKeyRef != nil:
			ref := e.ValueFrom.ConfigMapKeyRef
			cm := get[*corev1.ConfigMap](t, r, "ConfigMap/"+ns+"/"+ref.Name)
			v, ok := cm.Data[ref.Key]
			if !ok {
				t.Fatalf("env %s: ConfigMap %s has no key %s", e.Name, ref.Name, ref.Key)
			}
			env[e.Name] = v
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "status.podIP":
			env[e.Name] = "127.0.0.1"
		default:
			t.Fatalf("env %s: %+v is not resolved by this test", e.Name, e.ValueFrom)
		}
	}
	return env
}

var envRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// expand replaces $(VAR) with the container's env var, as the kubelet
// does in args; a reference to a var the container lacks is a failure
// here (the kubelet would pass it on as written).
func expand(t *testing.T, arg string, env map[string]string) string {
	t.Helper()
	return envRef.ReplaceAllStringFunc(arg, func(ref string) string {
		v, ok := env[ref[2:len(ref)-1]]
		if !ok {
			t.Fatalf("argument %q refers to %s, which the container's env lacks", arg, ref)
		}
		return v
	})
}

// cli runs the consul CLI against this server, as an operator would with
// `kubectl exec consul-0 -- consul ...`.
func (c *renderedConsul) cli(t *testing.T, stdin *strings.Reader, args ...string) string {
	t.Helper()
	cmd := exec.Command(c.bin, args...)
	cmd.Env = append(os.Environ(), "CONSUL_HTTP_ADDR=127.0.0.1:"+strconv.Itoa(c.http))
	if stdin != nil {
		cmd.Stdin = stdin
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: consul %s: %v: %s%s", c.site, args[0]+" "+args[1], err, out.String(), errb.String())
	}
	return out.String()
}

// waitFor polls cond until it holds, or fails the test.
func waitFor[T any](ctx context.Context, t *testing.T, c *renderedConsul, what string, cond func() (T, bool)) T {
	t.Helper()
	for {
		v, ok := cond()
		if ok {
			return v
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: still waiting for %s at the deadline (log %s)", c.site, what, c.log)
		case <-c.exited:
			t.Fatalf("%s: Consul exited while waiting for %s", c.site, what)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return fmt.Sprintf("...%s", b)
}
