// Package attest checks a workload's proof of identity against the system
// that vouches for it, before the control plane hands the workload an
// SVID: Kubernetes (a projected service-account token, via TokenReview) or
// Consul (an ACL token allowed to write the service).
//
// Each check answers one question: may the holder of this token act as
// service S in namespace N? A definitive "no" wraps ErrRefused; any other
// error (the API server or Consul unreachable) is transient and the caller
// retries. Tokens are never logged or echoed in errors.
package attest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/hashicorp/consul/api"
	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
)

// ErrRefused means the proof was checked and does not grant the identity.
var ErrRefused = errors.New("proof of identity refused")

// DefaultAudience is the audience a projected service-account token must
// be issued for, so that a token meant for another system (or the
// API server itself) cannot be replayed to obtain an SVID.
const DefaultAudience = "medmesh"

// Kubernetes checks projected service-account tokens with TokenReview.
//
// The mapping from Kubernetes to medmesh identity is fixed and simple: the
// pod's service account is named after its service, in the service's
// namespace (spiffe://<td>/ns/<ns>/svc/<svc> is granted to
// system:serviceaccount:<ns>:<svc>). The injector (sidecar injection)
// creates pods that way; anything else is refused.
type Kubernetes struct {
	Client kubernetes.Interface
	// Audience the token must carry; DefaultAudience when empty.
	Audience string
}

// Attest implements the control plane's Attestor.
func (k *Kubernetes) Attest(ctx context.Context, token, namespace, service string) error {
	aud := k.Audience
	if aud == "" {
		aud = DefaultAudience
	}
	tr, err := k.Client.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{
		Spec: authnv1.TokenReviewSpec{Token: token, Audiences: []string{aud}},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("kubernetes TokenReview: %w", err)
	}
	if !tr.Status.Authenticated {
		// Status.Error comes from the API server's authenticators; it
		// describes the failure, not the token.
		return fmt.Errorf("%w: kubernetes did not authenticate the service-account token: %s", ErrRefused, tr.Status.Error)
	}
	if !audienceIn(tr.Status.Audiences, aud) {
		return fmt.Errorf("%w: the service-account token is not issued for audience %q", ErrRefused, aud)
	}
	ns, sa, err := serviceAccount(tr.Status.User.Username)
	if err != nil {
		return err
	}
	if ns != namespace || sa != service {
		return fmt.Errorf("%w: service account %s/%s may act only as service %q in namespace %q, not %q in %q",
			ErrRefused, ns, sa, sa, ns, service, namespace)
	}
	return nil
}

func audienceIn(auds []string, want string) bool {
	for _, a := range auds {
		if a == want {
			return true
		}
	}
	return false
}

// serviceAccount splits "system:serviceaccount:<ns>:<name>".
func serviceAccount(user string) (ns, name string, err error) {
	const prefix = "system:serviceaccount:"
	var rest string
	if len(user) > len(prefix) && user[:len(prefix)] == prefix {
		rest = user[len(prefix):]
	}
	for i := 0; i < len(rest); i++ {
		if rest[i] == ':' {
			ns, name = rest[:i], rest[i+1:]
			break
		}
	}
	if len(validation.IsDNS1123Label(ns)) > 0 || len(validation.IsDNS1123Subdomain(name)) > 0 {
		return "", "", fmt.Errorf("%w: the token authenticates %q, which is not a service account", ErrRefused, user)
	}
	return ns, name, nil
}

// Consul checks Consul ACL tokens: the token must be allowed to write the
// service it claims (service:write, which is what registering the service
// itself requires). The check is Consul's own authorizer, through the
// endpoint Consul's UI uses for permission checks
// (POST /v1/internal/acl/authorize), so every kind of rule (policies,
// roles, service identities, templated policies) counts exactly as Consul
// counts it. consul/api has no call for it (its raw writes are PUTs), so
// the request is made here, over consul/api's own transport and TLS set-up.
//
// OSS Consul has no namespaces: a service's medmesh namespace is not
// part of the Consul check.
type Consul struct {
	url  string
	http *http.Client
}

// NewConsul checks tokens with the Consul agent that cfg addresses.
func NewConsul(cfg *api.Config) (*Consul, error) {
	scheme, addr := cfg.Scheme, cfg.Address
	if i := strings.Index(addr, "://"); i >= 0 {
		scheme, addr = addr[:i], addr[i+3:]
	}
	if scheme == "" {
		scheme = "http"
	}
	tr := cfg.Transport
	if tr == nil {
		tr = api.DefaultConfig().Transport
	}
	hc, err := api.NewHttpClient(tr, cfg.TLSConfig)
	if err != nil {
		return nil, fmt.Errorf("consul ACL checks: %w", err)
	}
	return &Consul{url: scheme + "://" + addr + "/v1/internal/acl/authorize", http: hc}, nil
}

type aclAuthorization struct {
	Resource string `json:"Resource"`
	Segment  string `json:"Segment,omitempty"`
	Access   string `json:"Access"`
	Allow    bool   `json:"Allow,omitempty"`
}

// Attest implements the control plane's Attestor.
func (c *Consul) Attest(ctx context.Context, token, _, service string) error {
	body, _ := json.Marshal([]aclAuthorization{{Resource: "service", Segment: service, Access: "write"}})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("X-Consul-Token", token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("consul ACL check: %w", err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	switch {
	case resp.StatusCode == http.StatusOK:
	case strings.Contains(string(msg), "ACL support disabled"):
		// Without ACLs every token is "allowed": it proves nothing.
		return fmt.Errorf("%w: consul has ACLs disabled, so a consul token proves nothing", ErrRefused)
	case resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusUnauthorized:
		// Consul answers 403 "ACL not found" for an unknown token.
		return fmt.Errorf("%w: consul does not know the ACL token", ErrRefused)
	default:
		return fmt.Errorf("consul ACL check: %s: %s", resp.Status, strings.TrimSpace(string(msg)))
	}
	var out []aclAuthorization
	if err := json.Unmarshal(msg, &out); err != nil {
		return fmt.Errorf("consul ACL check: %w", err)
	}
	if len(out) != 1 {
		return fmt.Errorf("consul ACL check: %d answers to one question", len(out))
	}
	if !out[0].Allow {
		return fmt.Errorf("%w: the consul ACL token may not write service %q", ErrRefused, service)
	}
	return nil
}
