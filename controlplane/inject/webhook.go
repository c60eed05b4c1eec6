package inject

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// The webhook's two paths. The API server calls PathNamespace for pods in
// namespaces labelled medmesh.io/inject=enabled and PathAnnotated for the
// others (see WebhookConfiguration): which path was called is how the
// handler knows the namespace label without reading namespaces.
const (
	PathNamespace = "/inject"
	PathAnnotated = "/inject-annotated"
	PathCA        = "/ca.pem"
)

// Handler is the admission handler for one of the two paths.
type Handler struct {
	Config Config
	// NamespaceEnabled: this handler serves PathNamespace.
	NamespaceEnabled bool
	Logger           *slog.Logger
}

var _ admission.Handler = (*Handler)(nil)

// Handle decides and, if so, injects; the response is a JSON patch from
// the pod as received to the pod as injected.
func (h *Handler) Handle(_ context.Context, req admission.Request) admission.Response {
	if req.Kind.Kind != "Pod" || req.Operation != admissionv1.Create {
		return admission.Allowed("medmesh injects pods on creation only")
	}
	var pod corev1.Pod
	if err := json.Unmarshal(req.Object.Raw, &pod); err != nil {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("decoding pod in namespace %s: %w", req.Namespace, err))
	}
	raw := req.Object.Raw
	// The object may lack its namespace (the request carries it); names
	// in messages need it, the patch must not add it.
	origNS := pod.Namespace
	if pod.Namespace == "" {
		pod.Namespace = req.Namespace
	}
	d := Decide(&pod, h.NamespaceEnabled)
	log := h.Logger.With("pod", podName(&pod))
	if !d.Inject {
		log.Debug("not injected", "reason", d.Reason)
		return admission.Allowed(d.Reason)
	}
	res, err := Inject(&pod, h.Config)
	if err != nil {
		log.Warn("injection refused", "err", err)
		return admission.Denied(err.Error())
	}
	res.Pod.Namespace = origNS
	mutated, err := json.Marshal(res.Pod)
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, fmt.Errorf("encoding injected pod %s: %w", podName(&pod), err))
	}
	resp := admission.PatchResponseFromRaw(raw, mutated)
	resp.Warnings = append(resp.Warnings, res.Warnings...)
	log.Info("injected", "service", res.Service, "reason", d.Reason, "patches", len(resp.Patches))
	return resp
}

// CertSource signs the webhook's serving certificate (certs.CA).
type CertSource interface {
	ServingCert(hosts []string, ttl time.Duration) (*tls.Certificate, error)
	BundlePEM() []byte
}

// ServerOptions configure the webhook's HTTPS server.
type ServerOptions struct {
	Listen string
	Config Config
	Certs  CertSource
	// Hosts are the names (or IPs) the API server dials: the Service's
	// DNS names, e.g. medmesh-webhook.medmesh-system.svc.
	Hosts []string
	// CertTTL is the serving certificate's life; it is renewed at half-life.
	CertTTL time.Duration
	Logger  *slog.Logger
}

// Server is the webhook's HTTPS server.
type Server struct {
	o  ServerOptions
	l  net.Listener
	hs *http.Server

	mu   sync.Mutex
	cert *tls.Certificate
}

// Listen signs the first serving certificate and binds the address, so
// a bad flag fails at start, not at the first pod.
func Listen(o ServerOptions) (*Server, error) {
	if o.Certs == nil {
		return nil, errors.New("inject: the webhook needs a CA (mTLS on, with --state-dir or --ca-cert/--ca-key)")
	}
	if len(o.Hosts) == 0 {
		return nil, errors.New("inject: --webhook-dns is empty: the serving certificate needs the names the API server dials")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	s := &Server{o: o}
	if _, err := s.certificate(); err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return nil, fmt.Errorf("inject: webhook listen %s: %w", o.Listen, err)
	}
	s.l = l
	mux := http.NewServeMux()
	log := o.Logger.With("component", "inject")
	mux.Handle("POST "+PathNamespace, &admission.Webhook{Handler: &Handler{Config: o.Config, NamespaceEnabled: true, Logger: log}})
	mux.Handle("POST "+PathAnnotated, &admission.Webhook{Handler: &Handler{Config: o.Config, Logger: log}})
	mux.HandleFunc("GET "+PathCA, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/x-pem-file")
		w.Write(o.Certs.BundlePEM())
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	s.hs = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12,
			GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return s.certificate() }},
	}
	return s, nil
}

// Addr is the bound address.
func (s *Server) Addr() net.Addr { return s.l.Addr() }

// Serve serves until ctx ends.
func (s *Server) Serve(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.hs.ServeTLS(s.l, "", "") }()
	s.o.Logger.Info("sidecar injection webhook serving", "addr", s.l.Addr().String(), "hosts", s.o.Hosts)
	select {
	case err := <-errc:
		return fmt.Errorf("inject: webhook server: %w", err)
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.hs.Shutdown(shutdown)
	return nil
}

// certificate returns the serving certificate, signing a new one past
// half its life: the CA may rotate its root, and a fresh leaf then
// chains to the new one.
func (s *Server) certificate() (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.cert; c != nil && time.Until(c.Leaf.NotAfter) > c.Leaf.NotAfter.Sub(c.Leaf.NotBefore)/2 {
		return c, nil
	}
	c, err := s.o.Certs.ServingCert(s.o.Hosts, s.o.CertTTL)
	if err != nil {
		if s.cert != nil && time.Now().Before(s.cert.Leaf.NotAfter) {
			s.o.Logger.Error("renewing the webhook serving certificate; keeping the current one", "err", err)
			return s.cert, nil
		}
		return nil, fmt.Errorf("inject: webhook serving certificate for %v: %w", s.o.Hosts, err)
	}
	s.cert = c
	return c, nil
}
