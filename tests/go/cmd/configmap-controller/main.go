// Command configmap-controller reconciles ConfigMaps in every workspace bound to an APIExport
// that claims them (a permission claim on core configmaps and events), through the APIExport
// virtual workspace: the job of multicluster-provider's examples/apiexport, written for these
// tests with an effect that can be checked from outside.
//
// It is given a kubeconfig for the workspace holding the APIExportEndpointSlice and the slice's
// name. Every ConfigMap it sees gets the annotation example.dev/reconciled-by=<--name> (a merge
// patch through the VW, to the ConfigMap's own logical cluster), and once annotated an Event
// regarding it, reason Reconciled, written in the same cluster: an events.k8s.io/v1 Event
// (controller-runtime's current recorder) or, with --events=core, a core v1 Event (its
// deprecated one). Both recorders send protobuf.
//
// Exit status: 0 after SIGTERM/SIGINT, 1 when setup fails or the manager stops with an error.
package main

import (
	"context"
	"flag"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	mcmanager "sigs.k8s.io/multicluster-runtime/pkg/manager"
	mcreconcile "sigs.k8s.io/multicluster-runtime/pkg/reconcile"

	"github.com/vwproxy/vwproxy/tests/go/internal/program"
)

const (
	// ReconciledByAnnotation names the controller that reconciled a ConfigMap.
	ReconciledByAnnotation = "example.dev/reconciled-by"
	// ReconciledReason is the reason of the Event recorded for each reconciled ConfigMap.
	ReconciledReason = "Reconciled"
)

func main() {
	var (
		kubeconfig    = flag.String("kubeconfig", "", "kubeconfig for the workspace that holds the APIExportEndpointSlice (required)")
		endpointSlice = flag.String("endpointslice", "examples-apiexport-multicluster", "name of the APIExportEndpointSlice to follow")
		name          = flag.String("name", "configmap-controller", "controller name: the "+ReconciledByAnnotation+" annotation and the Events' reporting controller")
		eventsAPI     = flag.String("events", "events.k8s.io", "which Events to record: events.k8s.io (events.k8s.io/v1) or core (v1)")
		verbose       = flag.Bool("v", false, "debug logging")
	)
	flag.Parse()
	logger := program.SetupLogging(*verbose)
	if *kubeconfig == "" {
		program.Fail(logger, fmt.Errorf("--kubeconfig is required"), "bad flags")
	}
	if *eventsAPI != "events.k8s.io" && *eventsAPI != "core" {
		program.Fail(logger, fmt.Errorf("--events must be events.k8s.io or core, not %q", *eventsAPI), "bad flags")
	}

	cfg, err := program.LoadConfig(*kubeconfig)
	if err != nil {
		program.Fail(logger, err, "loading kubeconfig", "path", *kubeconfig)
	}
	logger.Info("following endpoint slice", "host", cfg.Host, "endpointslice", *endpointSlice, "events", *eventsAPI)

	program.RunAPIExportController(logger, cfg, *endpointSlice, *name, &corev1.ConfigMap{}, func(mgr mcmanager.Manager) reconcile.TypedReconciler[mcreconcile.Request] {
		return &configMapReconciler{manager: mgr, name: *name, coreEvents: *eventsAPI == "core"}
	})
}

// configMapReconciler annotates each ConfigMap once and records an Event about it, in the
// ConfigMap's own cluster.
type configMapReconciler struct {
	manager    mcmanager.Manager
	name       string
	coreEvents bool // core v1 Events (the deprecated recorder) instead of events.k8s.io/v1
}

func (r *configMapReconciler) Reconcile(ctx context.Context, req mcreconcile.Request) (reconcile.Result, error) {
	logger := log.FromContext(ctx).WithValues("cluster", req.ClusterName, "configmap", req.NamespacedName)
	cluster, err := r.manager.GetCluster(ctx, req.ClusterName)
	if err != nil {
		return reconcile.Result{}, fmt.Errorf("cluster %q: %w", req.ClusterName, err)
	}
	c := cluster.GetClient()

	configMap := &corev1.ConfigMap{}
	if err := c.Get(ctx, req.NamespacedName, configMap); err != nil {
		if apierrors.IsNotFound(err) {
			logger.Info("configmap is gone")
			return reconcile.Result{}, nil
		}
		return reconcile.Result{}, fmt.Errorf("reading configmap: %w", err)
	}
	if configMap.Annotations[ReconciledByAnnotation] == r.name {
		return reconcile.Result{}, nil
	}

	before := configMap.DeepCopy()
	if configMap.Annotations == nil {
		configMap.Annotations = map[string]string{}
	}
	configMap.Annotations[ReconciledByAnnotation] = r.name
	if err := c.Patch(ctx, configMap, client.MergeFrom(before)); err != nil {
		return reconcile.Result{}, fmt.Errorf("annotating configmap: %w", err)
	}
	logger.Info("annotated configmap", "uid", configMap.UID, "resourceVersion", configMap.ResourceVersion)

	// Recorders send asynchronously; the test reads the Events through the front.
	message := fmt.Sprintf("ConfigMap %s reconciled by %s", configMap.Name, r.name)
	if r.coreEvents {
		cluster.GetEventRecorderFor(r.name).Event(configMap, corev1.EventTypeNormal, ReconciledReason, message) //nolint:staticcheck // the core v1 path on purpose
	} else {
		cluster.GetEventRecorder(r.name).Eventf(configMap, nil, corev1.EventTypeNormal, ReconciledReason, "Reconcile", "%s", message)
	}
	return reconcile.Result{}, nil
}
