package adminauth

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// The Kubernetes attributes a bearer token's user is authorized against
// (SubjectAccessReview, cluster scope): the read role is verb "get" and
// the operate role verb "update" on resource "controlplanes" in API group
// "medmesh.io". No such CRD needs to exist: RBAC authorizes attributes,
// and the ClusterRoles medmesh-admin-read and medmesh-admin-operate in
// deploy/ grant exactly these.
const (
	KubeGroup       = "medmesh.io"
	KubeResource    = "controlplanes"
	KubeVerbRead    = "get"
	KubeVerbOperate = "update"
)

// DefaultKubeCacheTTL is how long a token's decision is reused: long
// enough that a page refreshing every few seconds costs no API calls,
// short enough that a removed RoleBinding takes effect within it.
const DefaultKubeCacheTTL = 10 * time.Second

// Kube authenticates "Authorization: Bearer <token>" with TokenReview and
// finds the caller's role with SubjectAccessReviews.
type Kube struct {
	Client kubernetes.Interface
	// Audiences the token must be valid for; empty: the API server's own.
	Audiences []string
	// CacheTTL is how long a decision is reused (DefaultKubeCacheTTL).
	CacheTTL time.Duration
	// Now is the clock (tests).
	Now func() time.Time

	mu    sync.Mutex
	cache map[[32]byte]kubeDecision // by token hash: the token itself is never kept
}

type kubeDecision struct {
	p       Principal
	err     error
	expires time.Time
}

// maxCached bounds the cache against a flood of distinct bad tokens.
const maxCached = 4096

// Authenticate implements Authenticator.
func (k *Kube) Authenticate(r *http.Request) (Principal, bool, error) {
	h := r.Header.Get("Authorization")
	scheme, token, _ := strings.Cut(h, " ")
	if h == "" || !strings.EqualFold(scheme, "Bearer") {
		return Principal{}, false, nil
	}
	token = strings.TrimSpace(token)
	if token == "" {
		return Principal{}, true, fmt.Errorf("%w: empty bearer token", ErrRefused)
	}
	now := k.now()
	key := sha256.Sum256([]byte(token))
	k.mu.Lock()
	d, ok := k.cache[key]
	k.mu.Unlock()
	if ok && now.Before(d.expires) {
		return d.p, true, d.err
	}
	p, err := k.review(r.Context(), token)
	if err != nil && !isRefusal(err) {
		return p, true, err // the API server's trouble: not cached, the next call retries
	}
	ttl := k.CacheTTL
	if ttl <= 0 {
		ttl = DefaultKubeCacheTTL
	}
	k.mu.Lock()
	if k.cache == nil || len(k.cache) >= maxCached {
		k.cache = map[[32]byte]kubeDecision{}
	}
	k.cache[key] = kubeDecision{p: p, err: err, expires: now.Add(ttl)}
	k.mu.Unlock()
	return p, true, err
}

func isRefusal(err error) bool { return errors.Is(err, ErrRefused) }

func (k *Kube) now() time.Time {
	if k.Now != nil {
		return k.Now()
	}
	return time.Now()
}

// review authenticates the token, then asks for operate, and only if that
// is denied for read: operate implies read.
func (k *Kube) review(ctx context.Context, token string) (Principal, error) {
	tr, err := k.Client.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{
		Spec: authnv1.TokenReviewSpec{Token: token, Audiences: k.Audiences},
	}, metav1.CreateOptions{})
	if err != nil {
		return Principal{}, fmt.Errorf("kubernetes TokenReview: %w", err)
	}
	if !tr.Status.Authenticated {
		// Status.Error describes the authenticators' failure, not the token.
		return Principal{}, fmt.Errorf("%w: kubernetes did not authenticate the bearer token: %s", ErrRefused, tr.Status.Error)
	}
	u := tr.Status.User
	p := Principal{ID: u.Username, Via: "kubernetes"}
	extra := map[string]authzv1.ExtraValue{}
	for k, v := range u.Extra {
		extra[k] = authzv1.ExtraValue(v)
	}
	for _, c := range []struct {
		verb string
		role Role
	}{{KubeVerbOperate, RoleOperate}, {KubeVerbRead, RoleRead}} {
		sar, err := k.Client.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authzv1.SubjectAccessReview{
			Spec: authzv1.SubjectAccessReviewSpec{
				User: u.Username, UID: u.UID, Groups: u.Groups, Extra: extra,
				ResourceAttributes: &authzv1.ResourceAttributes{Group: KubeGroup, Resource: KubeResource, Verb: c.verb},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			return Principal{}, fmt.Errorf("kubernetes SubjectAccessReview: %w", err)
		}
		if sar.Status.Allowed {
			p.Role = c.role
			break
		}
	}
	return p, nil
}
