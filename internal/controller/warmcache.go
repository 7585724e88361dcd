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
	"fmt"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	authv1alpha1 "github.com/opsnow-token-operator/opsnow-token-operator/api/v1alpha1"
)

// warmCaches makes a standby replica's caches as warm as the leader's, so
// that a takeover starts reconciling at once instead of with a full list of
// every watched object while tokens wait. It registers, at setup, every
// informer the reconciler's watches use: controller-runtime otherwise
// creates one when a controller starts, that is only once a replica leads.
// The manager's cache runs on every replica already; secretMetadata, the
// metadata-only Secret cache, is returned wrapped as a runnable that needs
// no leader election, for Setup to add to the manager in its place (a bare
// cache.Cache added to a manager starts only on the leader).
func warmCaches(mgr ctrl.Manager, secretMetadata cache.Cache) manager.Runnable {
	err := warmInformers(context.Background(), mgr.GetCache(), secretMetadata)
	return standbyCache{Cache: secretMetadata, err: err}
}

func warmInformers(ctx context.Context, objects, secretMetadata cache.Informers) error {
	// The caches are not started yet: this only registers the informers,
	// which run and sync when the manager starts its caches.
	// No typed Secret informer: Secrets are watched by metadata only.
	if err := warmObjects(ctx, objects, &authv1alpha1.OpsnowToken{}); err != nil {
		return err
	}
	return warmObjects(ctx, secretMetadata, secretMetadataObject())
}

// warmObjects registers the informers of objs in c, without waiting for them.
func warmObjects(ctx context.Context, c cache.Informers, objs ...client.Object) error {
	for _, obj := range objs {
		if _, err := c.GetInformer(ctx, obj, cache.BlockUntilSynced(false)); err != nil {
			return fmt.Errorf("create %T informer: %w", obj, err)
		}
	}
	return nil
}

// standbyCache runs a cache on every replica, leader or not. err, when set,
// is why its informers could not be registered; the manager then fails to
// start with it.
type standbyCache struct {
	cache.Cache
	err error
}

// NeedLeaderElection is false: the standby's informers must be in sync
// before it leads.
func (c standbyCache) NeedLeaderElection() bool { return false }

// Start runs the cache until ctx ends.
func (c standbyCache) Start(ctx context.Context) error {
	if c.err != nil {
		return c.err
	}
	return c.Cache.Start(ctx)
}
