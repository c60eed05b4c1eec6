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
	"context"
	"errors"
	"fmt"
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
// (/v1/internal/acl/authorize), so every kind of rule (policies, roles,
// service identities, templated policies) counts exactly as Consul counts
// it.
//
// OSS Consul has no namespaces: a service's medmesh namespace is not
// part of the Consul check.
type Consul struct {
	Client *api.Client
}

type aclAuthorization struct {
	Resource string `json:"Resource"`
	Segment  string `json:"Segment,omitempty"`
	Access   string `json:"Access"`
	Allow    bool   `json:"Allow,omitempty"`
}

// Attest implements the control plane's Attestor.
func (c *Consul) Attest(ctx context.Context, token, _, service string) error {
	req := []aclAuthorization{{Resource: "service", Segment: service, Access: "write"}}
	var out []aclAuthorization
	_, err := c.Client.Raw().Write("/v1/internal/acl/authorize", req, &out, (&api.WriteOptions{Token: token}).WithContext(ctx))
	if err != nil {
		var se api.StatusError
		switch {
		case errors.As(err, &se) && strings.Contains(se.Body, "ACL support disabled"):
			// Without ACLs every token is "allowed": it proves nothing.
			return fmt.Errorf("%w: consul has ACLs disabled, so a consul token proves nothing", ErrRefused)
		case errors.As(err, &se) && (se.Code == 403 || se.Code == 401):
			// Consul answers 403 "ACL not found" for an unknown token.
			return fmt.Errorf("%w: consul does not know the ACL token", ErrRefused)
		}
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
