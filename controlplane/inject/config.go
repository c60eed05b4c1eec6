package inject

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// Names in the webhook configuration (deploy/base carries the same; a
// test keeps them equal).
const (
	WebhookConfigName    = "medmesh-sidecar-injector"
	WebhookNamespaceName = "namespace.inject.medmesh.io"
	WebhookAnnotatedName = "annotated.inject.medmesh.io"
)

// SystemNamespaces never see the annotation-driven webhook: the control
// plane must not depend on itself, nor the cluster's own pods on it.
var SystemNamespaces = []string{"kube-system", "kube-public", "kube-node-lease", "medmesh-system"}

// WebhookConfiguration is the MutatingWebhookConfiguration for the
// injector; clientConfig gives, per path, how the API server reaches it
// (a Service in a cluster, a URL in tests), with caBundle set.
//
//   - Namespaces labelled medmesh.io/inject=enabled: PathNamespace,
//     failurePolicy Fail. A pod of a meshed namespace that started without
//     its sidecar would be a PHI service outside mTLS and audit: better
//     not started until the injector is back.
//   - Every other namespace but SystemNamespaces and those labelled
//     medmesh.io/inject=disabled: PathAnnotated (injects only pods
//     annotated medmesh.io/inject=true), failurePolicy Ignore: an
//     injector outage must not stop every pod of the cluster.
func WebhookConfiguration(clientConfig func(path string) admissionregistrationv1.WebhookClientConfig) *admissionregistrationv1.MutatingWebhookConfiguration {
	rules := []admissionregistrationv1.RuleWithOperations{{
		Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
		Rule: admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"},
			Scope: ptr(admissionregistrationv1.NamespacedScope)},
	}}
	hook := func(name, path string, policy admissionregistrationv1.FailurePolicyType, sel *metav1.LabelSelector) admissionregistrationv1.MutatingWebhook {
		return admissionregistrationv1.MutatingWebhook{
			Name: name, ClientConfig: clientConfig(path), Rules: rules, NamespaceSelector: sel,
			FailurePolicy:           ptr(policy),
			MatchPolicy:             ptr(admissionregistrationv1.Equivalent),
			SideEffects:             ptr(admissionregistrationv1.SideEffectClassNone),
			AdmissionReviewVersions: []string{"v1"},
			TimeoutSeconds:          ptr(int32(10)),
			// Later webhooks adding containers get no second pass: ours
			// would not change anything (idempotent) but would cost a call.
			ReinvocationPolicy: ptr(admissionregistrationv1.NeverReinvocationPolicy),
		}
	}
	return &admissionregistrationv1.MutatingWebhookConfiguration{
		TypeMeta:   metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "MutatingWebhookConfiguration"},
		ObjectMeta: metav1.ObjectMeta{Name: WebhookConfigName},
		Webhooks: []admissionregistrationv1.MutatingWebhook{
			hook(WebhookNamespaceName, PathNamespace, admissionregistrationv1.Fail,
				&metav1.LabelSelector{MatchLabels: map[string]string{LabelNamespace: "enabled"}}),
			hook(WebhookAnnotatedName, PathAnnotated, admissionregistrationv1.Ignore,
				&metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
					{Key: LabelNamespace, Operator: metav1.LabelSelectorOpNotIn, Values: []string{"enabled", "disabled"}},
					{Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpNotIn, Values: SystemNamespaces},
				}}),
		},
	}
}

// PatchCABundle sets caBundle on every webhook of the named configuration
// with a strategic merge patch keyed by webhook name, so nothing else an
// operator set is touched. The control plane calls it at start when it
// runs in the cluster, because its CA may be one it created itself.
func PatchCABundle(ctx context.Context, kc kubernetes.Interface, name string, caPEM []byte) error {
	cfg, err := kc.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("inject: reading MutatingWebhookConfiguration %s: %w", name, err)
	}
	if len(cfg.Webhooks) == 0 {
		return fmt.Errorf("inject: MutatingWebhookConfiguration %s has no webhooks", name)
	}
	type hook struct {
		Name         string `json:"name"`
		ClientConfig struct {
			CABundle []byte `json:"caBundle"` // base64 in JSON, as the API has it
		} `json:"clientConfig"`
	}
	var patch struct {
		Webhooks []hook `json:"webhooks"`
	}
	for _, w := range cfg.Webhooks {
		h := hook{Name: w.Name}
		h.ClientConfig.CABundle = caPEM
		patch.Webhooks = append(patch.Webhooks, h)
	}
	body, err := json.Marshal(patch)
	if err != nil {
		return err
	}
	if _, err := kc.AdmissionregistrationV1().MutatingWebhookConfigurations().Patch(ctx, name, types.StrategicMergePatchType, body, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("inject: patching webhooks[*].clientConfig.caBundle of MutatingWebhookConfiguration %s: %w", name, err)
	}
	return nil
}

// KeepCABundle patches caBundle at once and again whenever bundle()
// changes (checked every interval) until ctx ends. A root rotation adds
// the new root to the CA's bundle for an overlap; the webhook's serving
// certificate is renewed from the new root later (at half-life), so the
// API server must learn the new bundle first or every injection, and in
// meshed namespaces every pod creation, would fail its TLS check.
func KeepCABundle(ctx context.Context, kc kubernetes.Interface, name string, bundle func() []byte, interval time.Duration, log *slog.Logger) error {
	last := bundle()
	first, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := PatchCABundle(first, kc, name, last); err != nil {
		return err
	}
	go func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			b := bundle()
			if bytes.Equal(b, last) {
				continue
			}
			if err := PatchCABundle(ctx, kc, name, b); err != nil {
				log.Error("updating the webhook caBundle after a CA change; retrying", "err", err)
				continue
			}
			last = b
			log.Info("webhook caBundle updated after a CA change", "mutatingwebhookconfiguration", name)
		}
	}()
	return nil
}
