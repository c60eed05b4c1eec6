package policy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"medmesh/api/v1alpha1"
	"medmesh/internal/latest"
)

// Kubernetes reads policies from the Kubernetes API: MeshRoute,
// MeshDestination and MeshAccess objects in every namespace, watched with
// controller-runtime's informer cache. Every event yields a complete Set
// listed from the cache (coalesced), like the directory source. It writes
// each object's conditions back to its status subresource.
//
// The API server has already checked each object against the CRD schema
// (types, enums, CEL rules): what reaches the Set is well-formed, and
// what Resolve refuses (a destination that does not exist, a conflict)
// is reported in status.
type Kubernetes struct {
	Config *rest.Config
	Logger *slog.Logger
	// Coalesce gathers bursts of events; 50 ms when zero.
	Coalesce time.Duration
	// StatusLease, when set, elects one writer of statuses among the
	// control plane's replicas (a coordination.k8s.io Lease). Every
	// replica reads policies and serves them; only the leader writes
	// status, or replicas that resolved at different instants would
	// rewrite each other's condition times forever.
	StatusLease *Lease

	mu      sync.Mutex
	pending []ObjectStatus // the latest statuses to write
	kick    chan struct{}
}

var _ Source = (*Kubernetes)(nil)
var _ StatusWriter = (*Kubernetes)(nil)

// Name implements Source.
func (k *Kubernetes) Name() string { return "kubernetes" }

// Scheme knows medmesh's policy types.
func Scheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(s); err != nil {
		return nil, err
	}
	return s, nil
}

// Run implements Source.
func (k *Kubernetes) Run(ctx context.Context, out chan *Set) error {
	log := k.Logger
	if log == nil {
		log = slog.Default()
	}
	coalesce := k.Coalesce
	if coalesce <= 0 {
		coalesce = 50 * time.Millisecond
	}
	scheme, err := Scheme()
	if err != nil {
		return err
	}
	c, err := cache.New(k.Config, cache.Options{Scheme: scheme})
	if err != nil {
		return fmt.Errorf("kubernetes policy cache: %w", err)
	}
	cl, err := client.New(k.Config, client.Options{Scheme: scheme, Cache: &client.CacheOptions{Reader: c}})
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	changed := make(chan struct{}, 1)
	signal := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	handler := toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { signal() },
		UpdateFunc: func(old, cur any) { signal() },
		DeleteFunc: func(any) { signal() },
	}
	for _, obj := range []client.Object{&v1alpha1.MeshRoute{}, &v1alpha1.MeshDestination{}, &v1alpha1.MeshAccess{}} {
		inf, err := c.GetInformer(ctx, obj)
		if err != nil {
			return fmt.Errorf("watching %T: %w", obj, err)
		}
		if _, err := inf.AddEventHandler(handler); err != nil {
			return err
		}
	}
	cacheErr := make(chan error, 1)
	go func() { cacheErr <- c.Start(ctx) }()
	if !c.WaitForCacheSync(ctx) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return errors.New("kubernetes policy cache did not sync (are the CRDs installed? kubectl apply -k deploy/crds)")
	}
	k.mu.Lock()
	if k.kick == nil {
		k.kick = make(chan struct{}, 1)
	}
	kick := k.kick
	k.mu.Unlock()
	if k.StatusLease == nil {
		go k.writeStatuses(ctx, cl, kick, log)
	} else {
		go k.leadStatusWrites(ctx, cl, kick, log)
	}

	// The first Set goes out once every cache has synced, even if empty.
	signal()
	var timer <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-cacheErr:
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("kubernetes policy cache stopped: %w", err)
		case <-changed:
			if timer == nil {
				timer = time.After(coalesce)
			}
		case <-timer:
			timer = nil
			set, err := listSet(ctx, c)
			if err != nil {
				log.Error("listing policies from the cache; keeping the last set", "err", err)
				continue
			}
			latest.Send(out, set)
		}
	}
}

func listSet(ctx context.Context, r client.Reader) (*Set, error) {
	var routes v1alpha1.MeshRouteList
	var dests v1alpha1.MeshDestinationList
	var access v1alpha1.MeshAccessList
	for _, l := range []client.ObjectList{&routes, &dests, &access} {
		if err := r.List(ctx, l); err != nil {
			return nil, err
		}
	}
	// Objects from the cache are shared: copy them, as a Set is handed to
	// another goroutine and kept.
	set := &Set{}
	for i := range routes.Items {
		set.Routes = append(set.Routes, *routes.Items[i].DeepCopy())
	}
	for i := range dests.Items {
		set.Destinations = append(set.Destinations, *dests.Items[i].DeepCopy())
	}
	for i := range access.Items {
		set.Access = append(set.Access, *access.Items[i].DeepCopy())
	}
	return set, nil
}

// WriteStatuses implements StatusWriter: it keeps the latest statuses for
// the writer goroutine and never blocks the control loop.
func (k *Kubernetes) WriteStatuses(s []ObjectStatus) {
	k.mu.Lock()
	k.pending = append([]ObjectStatus(nil), s...)
	if k.kick == nil {
		k.kick = make(chan struct{}, 1)
	}
	kick := k.kick
	k.mu.Unlock()
	select {
	case kick <- struct{}{}:
	default:
	}
}

// writeStatuses writes each object's conditions to its status
// subresource when they differ from what the object shows. A conflict
// (the object changed meanwhile) is left to the next resolution, which
// follows from that very change.
func (k *Kubernetes) writeStatuses(ctx context.Context, cl client.Client, kick chan struct{}, log *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-kick:
		}
		k.mu.Lock()
		statuses := k.pending
		k.pending = nil
		k.mu.Unlock()
		for _, s := range statuses {
			if err := writeStatus(ctx, cl, s); err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
				log.Warn("cannot write policy status", "policy", s.Key.String(), "err", err)
			}
		}
	}
}

func writeStatus(ctx context.Context, cl client.Client, s ObjectStatus) error {
	var obj client.Object
	var status *v1alpha1.PolicyStatus
	switch s.Kind {
	case v1alpha1.KindMeshRoute:
		o := &v1alpha1.MeshRoute{}
		obj, status = o, &o.Status
	case v1alpha1.KindMeshDestination:
		o := &v1alpha1.MeshDestination{}
		obj, status = o, &o.Status
	case v1alpha1.KindMeshAccess:
		o := &v1alpha1.MeshAccess{}
		obj, status = o, &o.Status
	default:
		return fmt.Errorf("unknown kind %q", s.Kind)
	}
	if err := cl.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: s.Name}, obj); err != nil {
		return err
	}
	want := s.PolicyStatus()
	// The API server keeps times to the second: compare at that precision,
	// or every resolution would rewrite every status.
	want.Conditions = append([]metav1.Condition(nil), want.Conditions...)
	for i := range want.Conditions {
		want.Conditions[i].LastTransitionTime = want.Conditions[i].LastTransitionTime.Rfc3339Copy()
	}
	if reflect.DeepEqual(*status, want) {
		return nil
	}
	*status = want
	return cl.Status().Update(ctx, obj)
}

// Lease names the Lease that elects the status writer, and this
// replica's identity in it (its pod name).
type Lease struct {
	Namespace, Name, Identity string
}

// leadStatusWrites writes statuses while this replica holds the lease,
// and campaigns again when it loses it, until ctx ends.
func (k *Kubernetes) leadStatusWrites(ctx context.Context, cl client.Client, kick chan struct{}, log *slog.Logger) {
	kc, err := kubernetes.NewForConfig(k.Config)
	if err != nil {
		log.Error("no status writes: cannot build a client for the lease", "err", err)
		return
	}
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: k.StatusLease.Namespace, Name: k.StatusLease.Name},
		Client:     kc.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: k.StatusLease.Identity},
	}
	for ctx.Err() == nil {
		leaderelection.RunOrDie(ctx, leaderelection.LeaderElectionConfig{
			Lock: lock, LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 2 * time.Second,
			ReleaseOnCancel: true,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(ctx context.Context) {
					log.Info("writing policy statuses (lease acquired)", "lease", k.StatusLease.Namespace+"/"+k.StatusLease.Name)
					// Statuses kept while following are written now.
					select {
					case kick <- struct{}{}:
					default:
					}
					k.writeStatuses(ctx, cl, kick, log)
				},
				OnStoppedLeading: func() {},
			},
		})
	}
}
