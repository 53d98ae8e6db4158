// Command apiexport-controller reconciles the example's Widgets in every workspace bound to
// an APIExport, through the APIExport virtual workspace, the way a provider's controller built
// on multicluster-runtime and kcp's multicluster-provider runs against kcp.
//
// It is given a kubeconfig for the provider's workspace (the one holding the
// APIExportEndpointSlice) and the slice's name. For each Widget it stamps an annotation naming
// itself and a finalizer on the object (a merge patch, released again when the widget is
// deleted), then writes status.ready=true and
// status.observedSize=spec.size to the widget's own logical cluster, as a merge patch or, with
// --status-write=update, as a PUT of the object read from the cache (its resourceVersion a
// precondition), the two ways controllers write status.
//
// Exit status: 0 after SIGTERM/SIGINT, 1 when setup fails or the manager stops with an error.
package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	mcmanager "sigs.k8s.io/multicluster-runtime/pkg/manager"
	mcreconcile "sigs.k8s.io/multicluster-runtime/pkg/reconcile"

	"github.com/vwproxy/vwproxy/tests/go/internal/program"
)

const (
	// ReconciledByAnnotation names the controller that last reconciled a widget.
	ReconciledByAnnotation = "example.dev/reconciled-by"
	// CleanupFinalizer holds a deleted widget until the controller has seen the deletion.
	CleanupFinalizer = "example.dev/cleanup"
)

var widgetKind = schema.GroupVersionKind{Group: "example.dev", Version: "v1alpha1", Kind: "Widget"}

func main() {
	var (
		kubeconfig    = flag.String("kubeconfig", "", "kubeconfig for the workspace that holds the APIExportEndpointSlice (required)")
		endpointSlice = flag.String("endpointslice", "widgets", "name of the APIExportEndpointSlice to follow")
		name          = flag.String("name", "widget-controller", "controller name, written to the "+ReconciledByAnnotation+" annotation")
		statusWrite   = flag.String("status-write", "patch", "how status is written: patch (merge patch) or update (PUT with the cached resourceVersion)")
		verbose       = flag.Bool("v", false, "debug logging")
	)
	flag.Parse()
	logger := program.SetupLogging(*verbose)
	if *kubeconfig == "" {
		program.Fail(logger, fmt.Errorf("--kubeconfig is required"), "bad flags")
	}
	if *statusWrite != "patch" && *statusWrite != "update" {
		program.Fail(logger, fmt.Errorf("--status-write must be patch or update, not %q", *statusWrite), "bad flags")
	}

	cfg, err := program.LoadConfig(*kubeconfig)
	if err != nil {
		program.Fail(logger, err, "loading kubeconfig", "path", *kubeconfig)
	}
	logger.Info("following endpoint slice", "host", cfg.Host, "endpointslice", *endpointSlice)

	widget := &unstructured.Unstructured{}
	widget.SetGroupVersionKind(widgetKind)
	program.RunAPIExportController(logger, cfg, *endpointSlice, *name, widget, func(mgr mcmanager.Manager) reconcile.TypedReconciler[mcreconcile.Request] {
		return &widgetReconciler{manager: mgr, name: *name, updateStatus: *statusWrite == "update"}
	})
}

// widgetReconciler marks each widget as seen and ready, in the widget's own cluster.
type widgetReconciler struct {
	manager      mcmanager.Manager
	name         string
	updateStatus bool // PUT the whole object instead of a merge patch
}

func (r *widgetReconciler) Reconcile(ctx context.Context, req mcreconcile.Request) (reconcile.Result, error) {
	logger := log.FromContext(ctx).WithValues("cluster", req.ClusterName, "widget", req.NamespacedName)
	cluster, err := r.manager.GetCluster(ctx, req.ClusterName)
	if err != nil {
		return reconcile.Result{}, fmt.Errorf("cluster %q: %w", req.ClusterName, err)
	}
	c := cluster.GetClient()

	widget := &unstructured.Unstructured{}
	widget.SetGroupVersionKind(widgetKind)
	if err := c.Get(ctx, req.NamespacedName, widget); err != nil {
		if apierrors.IsNotFound(err) {
			logger.Info("widget is gone")
			return reconcile.Result{}, nil
		}
		return reconcile.Result{}, fmt.Errorf("reading widget: %w", err)
	}

	if widget.GetDeletionTimestamp() != nil {
		if controllerutil.ContainsFinalizer(widget, CleanupFinalizer) {
			before := widget.DeepCopy()
			controllerutil.RemoveFinalizer(widget, CleanupFinalizer)
			if err := c.Patch(ctx, widget, client.MergeFrom(before)); err != nil {
				return reconcile.Result{}, fmt.Errorf("releasing deleted widget: %w", err)
			}
			logger.Info("released deleted widget")
		}
		return reconcile.Result{}, nil
	}

	if widget.GetAnnotations()[ReconciledByAnnotation] != r.name || !controllerutil.ContainsFinalizer(widget, CleanupFinalizer) {
		// Metadata as a merge patch without an RV precondition, as controllers add finalizers.
		before := widget.DeepCopy()
		annotations := widget.GetAnnotations()
		if annotations == nil {
			annotations = map[string]string{}
		}
		annotations[ReconciledByAnnotation] = r.name
		widget.SetAnnotations(annotations)
		controllerutil.AddFinalizer(widget, CleanupFinalizer)
		if err := c.Patch(ctx, widget, client.MergeFrom(before)); err != nil {
			return reconcile.Result{}, fmt.Errorf("annotating widget: %w", err)
		}
		logger.Info("annotated widget", "resourceVersion", widget.GetResourceVersion())
	}

	size, _, err := unstructured.NestedInt64(widget.Object, "spec", "size")
	if err != nil {
		return reconcile.Result{}, fmt.Errorf("reading spec.size: %w", err)
	}
	observed, found, _ := unstructured.NestedInt64(widget.Object, "status", "observedSize")
	ready, _, _ := unstructured.NestedBool(widget.Object, "status", "ready")
	if found && observed == size && ready {
		return reconcile.Result{}, nil
	}
	before := widget.DeepCopy()
	if err := unstructured.SetNestedField(widget.Object, size, "status", "observedSize"); err != nil {
		return reconcile.Result{}, err
	}
	if err := unstructured.SetNestedField(widget.Object, true, "status", "ready"); err != nil {
		return reconcile.Result{}, err
	}
	var write error
	if r.updateStatus {
		write = c.Status().Update(ctx, widget)
	} else {
		write = c.Status().Patch(ctx, widget, client.MergeFrom(before))
	}
	if err := write; err != nil {
		if apierrors.IsConflict(err) {
			logger.Info("stale read, retrying", "error", err.Error())
			return reconcile.Result{RequeueAfter: 100 * time.Millisecond}, nil
		}
		return reconcile.Result{}, fmt.Errorf("writing widget status: %w", err)
	}
	logger.Info("widget ready", "observedSize", size, "resourceVersion", widget.GetResourceVersion())
	return reconcile.Result{}, nil
}
