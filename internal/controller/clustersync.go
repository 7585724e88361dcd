/*
Copyright 2026 The opsnow-token-operator Authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

package controller

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	authv1alpha1 "github.com/opsnow-token-operator/opsnow-token-operator/api/v1alpha1"
	"github.com/opsnow-token-operator/opsnow-token-operator/internal/opsnow"
)

// syncWriters bounds the Secret writes of one ClusterOpsnowToken in flight:
// enough that 500 namespaces take a second or two, few enough not to crowd
// out the API server's other clients.
const syncWriters = 16

// clusterOutcome is what acting on a ClusterOpsnowToken's plan did.
type clusterOutcome struct {
	outcome
	// Synced counts the targets that hold the written token after a sync;
	// SyncRan says a sync was attempted at all, SyncedToken of which token.
	Synced      int
	SyncRan     bool
	SyncedToken heldToken
	// Versions are, by namespace, the resourceVersions of the copies that
	// hold SyncedToken after the sync.
	Versions map[string]string
	// Failed holds the namespaces whose copy could not be written, by name.
	Failed map[string]*refreshError
	// Conflicts are namespaces found to hold a foreign Secret while writing.
	Conflicts []string
	// Deleted are the orphans deleted; DeleteErr is why one could not be.
	Deleted   []clusterOrphan
	DeleteErr error
}

// sync writes held to the Secret of every selected namespace that is not a
// conflict, in parallel, and returns the one failure the failure door
// records for all refused writes (nil when none was refused).
func (r *ClusterOpsnowTokenReconciler) sync(ctx context.Context, ci *clusterInputs, held heldToken, out *clusterOutcome) error {
	results := make([]error, len(ci.Targets))
	versions := make([]string, len(ci.Targets))
	inParallel(len(ci.Targets), func(i int) {
		if !ci.Targets[i].Conflict {
			versions[i], results[i] = r.writeCopy(ctx, ci, ci.Targets[i], held)
		}
	})

	out.SyncedToken, out.Versions = held, map[string]string{}
	out.SyncRan, out.Synced = true, 0
	if out.Failed == nil {
		out.Failed = map[string]*refreshError{}
	}
	var first string
	for i, t := range ci.Targets {
		err := results[i]
		var rerr *refreshError
		switch {
		case t.Conflict:
		case err == nil:
			out.Synced++
			out.Versions[t.Namespace] = versions[i]
		case errors.As(err, &rerr) && rerr.Reason == authv1alpha1.ReasonSecretConflict:
			out.Conflicts = append(out.Conflicts, t.Namespace)
		default:
			out.Failed[t.Namespace] = classify(err, held.Token)
			if first == "" {
				first = t.Namespace
			}
		}
	}
	if len(out.Failed) == 0 {
		return nil
	}
	return &refreshError{Reason: authv1alpha1.ReasonSecretWriteFailed, Message: fmt.Sprintf(
		"cannot write Secret %q in %d of %d namespaces; in %s: %s",
		ci.SecretName, len(out.Failed), len(ci.Targets), first, out.Failed[first].Message)}
}

// writeCopy creates the Secret of one namespace or patches it to hold
// held, writes nothing when it already does, and returns the copy's
// resourceVersion. A copy known to hold held gets a metadata-only patch
// (the template, the operator's annotations), and none when the cached
// metadata already records them; no copy's data is read here.
func (r *ClusterOpsnowTokenReconciler) writeCopy(ctx context.Context, ci *clusterInputs, t nsTarget, held heldToken) (string, error) {
	ct := ci.Cluster
	own := clusterTokenLabels(ct.Name)
	tmpl := ct.Spec.SecretTemplate
	if t.Secret == nil {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: t.Namespace, Name: ci.SecretName}}
		desiredSecretContent(own, tmpl, held, "").apply(s)
		// A namespaced object may have a cluster-scoped owner: deleting
		// the ClusterOpsnowToken garbage-collects every copy.
		if err := controllerutil.SetControllerReference(ct, s, r.tokens.scheme, controllerutil.WithBlockOwnerDeletion(false)); err != nil {
			return "", secretWriteError("set the owner of", ci.SecretName, err)
		}
		err := r.tokens.client.Create(ctx, s)
		if !apierrors.IsAlreadyExists(err) {
			if err != nil {
				return "", secretWriteError("create", ci.SecretName, err)
			}
			return s.ResourceVersion, nil
		}
		// Created meanwhile: by this operator (a cache behind its own
		// write) or by someone else (a conflict, left alone). Its data is
		// unknown, so the patch below writes the token whole.
		existing, conflict, rerr := r.liveCopy(ctx, ct, client.ObjectKeyFromObject(s))
		switch {
		case rerr != nil:
			return "", secretWriteError("read", ci.SecretName, rerr)
		case conflict:
			return "", &refreshError{Reason: authv1alpha1.ReasonSecretConflict, Message: conflictMessage(ci.SecretName)}
		case existing == nil:
			return "", secretWriteError("create", ci.SecretName, err)
		}
		t.Secret, t.Intact = existing, false
	}
	var c secretContent
	if t.holds(held.Token) {
		c = desiredSecretMetadata(own, tmpl, held, t.Secret.Annotations[tokenHashAnnotation])
	} else {
		c = desiredSecretContent(own, tmpl, held, t.Secret.Annotations[tokenHashAnnotation])
	}
	version, err := patchSecret(ctx, r.tokens.client, t.Secret, c)
	if err != nil {
		return "", secretWriteError("update", ci.SecretName, err)
	}
	return version, nil
}

// clusterTokenLabels are the operator's labels on a ClusterOpsnowToken's copies.
func clusterTokenLabels(name string) map[string]string {
	return map[string]string{
		authv1alpha1.ManagedByLabel:    authv1alpha1.ManagedByValue,
		authv1alpha1.ClusterTokenLabel: tokenLabelValue(name),
	}
}

func conflictMessage(secretName string) string {
	return fmt.Sprintf("Secret %q exists and is not controlled by this ClusterOpsnowToken; it is left untouched", secretName)
}

// deleteOrphans deletes the copies in namespaces no longer selected and,
// when every target holds the token (all), those a rename left behind in
// selected ones. The UID precondition keeps a Secret recreated under that
// name by someone else safe.
func (r *ClusterOpsnowTokenReconciler) deleteOrphans(ctx context.Context, ci *clusterInputs, all bool) ([]clusterOrphan, error) {
	var deleted []clusterOrphan
	for _, o := range ci.Orphans {
		if o.Selected && !all {
			continue
		}
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: o.Namespace, Name: o.Name}}
		err := r.tokens.client.Delete(ctx, s, client.Preconditions{UID: &o.UID})
		switch {
		case apierrors.IsNotFound(err), apierrors.IsConflict(err):
			continue
		case err != nil:
			return deleted, secretWriteError("delete", o.Namespace+"/"+o.Name, err)
		}
		deleted = append(deleted, o)
	}
	return deleted, nil
}

// actIdle is what a ClusterOpsnowToken selecting no namespace does: remove
// the copies it left and request nothing.
func (r *ClusterOpsnowTokenReconciler) actIdle(ctx context.Context, ci *clusterInputs) clusterOutcome {
	var out clusterOutcome
	out.Deleted, out.DeleteErr = r.deleteOrphans(ctx, ci, true)
	r.memory.update(clusterKey(ci.Cluster.Name), func(m *tokenMemory) { m.pending = nil })
	out.Now = r.tokens.clock.Now()
	return out
}

// clusterSummary is the status a ClusterOpsnowToken's reconcile leaves.
type clusterSummary struct {
	summary
	Cluster authv1alpha1.ClusterOpsnowTokenStatus
}

// summarizeCluster is summarize on the view, then the namespaces: Ready
// holds only while every selected namespace holds the current token; a
// conflict reads as Stalled, a refused write as Reconciling on the backoff.
func summarizeCluster(ci *clusterInputs, p plan, out clusterOutcome) clusterSummary {
	o := out.outcome
	if o.Err == nil && out.DeleteErr != nil {
		o.Err = out.DeleteErr
	}
	s := summarize(ci.inputs, p, o)
	st := &s.Status

	current := ci.Held.Token
	if out.Issued != nil {
		current = out.Issued.Token
	}
	failures := map[string]authv1alpha1.NamespaceFailure{}
	for _, t := range ci.Targets {
		if t.Conflict {
			failures[t.Namespace] = authv1alpha1.NamespaceFailure{Namespace: t.Namespace,
				Reason: authv1alpha1.ReasonSecretConflict, Message: conflictMessage(ci.SecretName)}
		}
	}
	for _, ns := range out.Conflicts {
		failures[ns] = authv1alpha1.NamespaceFailure{Namespace: ns,
			Reason: authv1alpha1.ReasonSecretConflict, Message: conflictMessage(ci.SecretName)}
	}
	conflicts := len(failures)
	for ns, f := range out.Failed {
		failures[ns] = authv1alpha1.NamespaceFailure{Namespace: ns, Reason: f.Reason, Message: f.Message}
	}
	synced := out.Synced
	if !out.SyncRan {
		synced = 0
		for _, t := range ci.Targets {
			if !t.Conflict && t.holds(current) {
				synced++
			}
		}
	}
	selected := len(ci.Targets)
	if ready := apimeta.FindStatusCondition(st.Conditions, authv1alpha1.ConditionReady); ready != nil &&
		ready.Status == metav1.ConditionTrue && synced < selected {
		msg := fmt.Sprintf("%d of %d namespaces hold the token; see status.failures", synced, selected)
		var extra metav1.Condition
		reason := authv1alpha1.ReasonProgressing
		switch {
		case len(out.Failed) > 0:
			reason = authv1alpha1.ReasonSecretWriteFailed
			extra = trueCondition(authv1alpha1.ConditionReconciling, reason,
				fmt.Sprintf("Retrying at %s", s.WakeAt.UTC().Format(time.RFC3339)))
		case conflicts > 0:
			reason = authv1alpha1.ReasonSecretConflict
			extra = trueCondition(authv1alpha1.ConditionStalled, reason, msg)
		default:
			extra = trueCondition(authv1alpha1.ConditionReconciling, reason, msg)
		}
		setConditions(st, ci.Token.Generation, o.Now, falseCondition(authv1alpha1.ConditionReady, reason, msg), &extra)
	}

	cs := clusterSummary{summary: s, Cluster: clusterStatus(*st)}
	cs.Cluster.Namespaces = authv1alpha1.NamespaceCounts{
		Selected: int32(selected), //nolint:gosec // G115: namespace counts are far below 2^31
		Synced:   int32(synced),
		Failed:   int32(len(failures)), //nolint:gosec // G115: as above
	}
	cs.Cluster.Failures = boundedFailures(failures)
	return cs
}

// boundedFailures lists at most MaxNamespaceFailures failures, by namespace.
func boundedFailures(failures map[string]authv1alpha1.NamespaceFailure) []authv1alpha1.NamespaceFailure {
	names := slices.Sorted(maps.Keys(failures))
	if len(names) > authv1alpha1.MaxNamespaceFailures {
		names = names[:authv1alpha1.MaxNamespaceFailures]
	}
	var out []authv1alpha1.NamespaceFailure
	for _, ns := range names {
		f := failures[ns]
		f.Message = opsnow.SanitizeLimit(f.Message, 256)
		out = append(out, f)
	}
	return out
}

// clusterStatus is the token part of a ClusterOpsnowToken's status.
func clusterStatus(st authv1alpha1.OpsnowTokenStatus) authv1alpha1.ClusterOpsnowTokenStatus {
	return authv1alpha1.ClusterOpsnowTokenStatus{
		ObservedGeneration:        st.ObservedGeneration,
		ExpiresAt:                 st.ExpiresAt,
		LastRefreshTime:           st.LastRefreshTime,
		NextRefreshTime:           st.NextRefreshTime,
		FailedAttempts:            st.FailedAttempts,
		LastHandledRefreshRequest: st.LastHandledRefreshRequest,
		LastFailureMessage:        st.LastFailureMessage,
		Conditions:                st.Conditions,
	}
}

// idleRetry is when a failed deletion of an idle token's copies is retried.
const idleRetry = 30 * time.Second

// summarizeIdle is the status of a ClusterOpsnowToken selecting no
// namespace: not ready, nothing planned, nothing failing.
func summarizeIdle(ci *clusterInputs, out clusterOutcome) clusterSummary {
	st := ci.Token.Status.DeepCopy()
	st.ObservedGeneration = ci.Token.Generation
	st.ExpiresAt, st.LastRefreshTime, st.NextRefreshTime = nil, nil, nil
	st.FailedAttempts, st.LastFailureMessage = 0, ""
	msg := "No namespace is selected by spec.namespaceSelector or spec.namespaces; no token is requested"
	setConditions(st, ci.Token.Generation, out.Now,
		falseCondition(authv1alpha1.ConditionReady, authv1alpha1.ReasonNoNamespacesSelected, msg), nil)
	s := clusterSummary{Cluster: clusterStatus(*st)}
	s.Status = *st
	if out.DeleteErr != nil {
		s.WakeAt = out.Now.Add(idleRetry)
	}
	return s
}

// record tells a ClusterOpsnowToken's outcome: logs, the refresh counter
// and events, as for an OpsnowToken, plus one event per change of the
// conflicting namespaces and one per batch of deleted copies.
func (r *ClusterOpsnowTokenReconciler) record(ctx context.Context, ci *clusterInputs, p plan, out clusterOutcome, s clusterSummary) {
	ct, ref := ci.Cluster, clusterEventRef(ci.Cluster)
	rec := r.tokens.recorder
	log := logf.FromContext(ctx)
	oldReason := ""
	if c := apimeta.FindStatusCondition(ct.Status.Conditions, authv1alpha1.ConditionReady); c != nil {
		oldReason = c.Reason
	}
	if f := s.Failure; f != nil {
		clusterRefreshTotal.WithLabelValues(ct.Name, "failure").Inc()
		retry := s.Status.NextRefreshTime.UTC().Format(time.RFC3339)
		log.Info("Token refresh failed", "reason", f.Reason, "message", f.Message,
			"failedAttempts", s.Status.FailedAttempts, "retryAt", retry)
		rec.Eventf(ref, nil, corev1.EventTypeWarning, f.Reason, "Refresh",
			"Token refresh failed: %s; retrying at %s", f.Message, retry)
	}
	newReason := ""
	if c := apimeta.FindStatusCondition(s.Cluster.Conditions, authv1alpha1.ConditionReady); c != nil {
		newReason = c.Reason
	}
	switch {
	case ci.idle() && oldReason != newReason:
		rec.Eventf(ref, nil, corev1.EventTypeNormal, authv1alpha1.ReasonNoNamespacesSelected, "Refresh",
			"No namespace is selected; no token is requested")
	case p.Action == actStall && oldReason != p.Reason:
		rec.Eventf(ref, nil, corev1.EventTypeWarning, p.Reason, "Refresh", "%s", p.Message)
	case p.Action == actSuspend && oldReason != authv1alpha1.ReasonSuspended:
		rec.Eventf(ref, nil, corev1.EventTypeNormal, authv1alpha1.ReasonSuspended, "Refresh",
			"Refreshing is suspended; the tokens in the Secrets are not renewed")
	}
	if added := newConflicts(ct.Status.Failures, s.Cluster.Failures); len(added) > 0 {
		rec.Eventf(ref, nil, corev1.EventTypeWarning, authv1alpha1.ReasonSecretConflict, "Refresh",
			"Secret %s exists and is not controlled by this ClusterOpsnowToken in namespace(s) %s; left untouched",
			ci.SecretName, shortList(added))
	}
	if issued := out.Issued; issued != nil {
		clusterRefreshTotal.WithLabelValues(ct.Name, "success").Inc()
		log.Info("Refreshed access token", "secret", ci.SecretName, "namespaces", out.Synced, "cause", p.Cause,
			"expiresAt", issued.ExpiresAt, "refreshAt", s.Schedule.RefreshAt)
		if p.Cause != causeScheduled || ct.Status.FailedAttempts > 0 {
			rec.Eventf(ref, nil, corev1.EventTypeNormal, eventTokenRefreshed, "Refresh",
				"Wrote a new access token to Secret %s in %d namespace(s) (%s); it expires at %s",
				ci.SecretName, out.Synced, p.Cause, issued.ExpiresAt.UTC().Format(time.RFC3339))
		}
		if s.Schedule.RefreshBeforeIgnored {
			rec.Eventf(ref, nil, corev1.EventTypeWarning, eventRefreshBeforeIgnored, "Refresh",
				"spec.refreshBefore (%s) is not shorter than the token lifetime (%s); refreshing at two thirds of the lifetime instead",
				refreshBefore(ci.Token), issued.ExpiresAt.Sub(issued.IssuedAt))
		}
	}
	if len(out.Deleted) > 0 {
		var where []string
		for _, o := range out.Deleted {
			where = append(where, o.Namespace+"/"+o.Name)
		}
		log.Info("Deleted Secrets no longer selected", "secrets", where)
		rec.Eventf(ref, nil, corev1.EventTypeNormal, eventOldSecretDeleted, "Refresh",
			"Deleted %d Secret(s) no longer selected: %s", len(where), shortList(where))
	}
}

// newConflicts returns the namespaces with a SecretConflict in now that
// were not in before.
func newConflicts(before, now []authv1alpha1.NamespaceFailure) []string {
	seen := map[string]bool{}
	for _, f := range before {
		if f.Reason == authv1alpha1.ReasonSecretConflict {
			seen[f.Namespace] = true
		}
	}
	var added []string
	for _, f := range now {
		if f.Reason == authv1alpha1.ReasonSecretConflict && !seen[f.Namespace] {
			added = append(added, f.Namespace)
		}
	}
	return added
}

// shortList joins up to five names, saying how many more there are.
func shortList(names []string) string {
	const show = 5
	if len(names) <= show {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:show], ", "), len(names)-show)
}
