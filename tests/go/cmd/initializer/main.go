// Command initializer is a workspace initializer built on kcp's multicluster-provider: it
// follows the initializing virtual workspace of one WorkspaceType and, for each workspace that
// waits on its initializer, creates a ConfigMap in it and then removes its own entry from the
// LogicalCluster's status.initializers, both through that virtual workspace.
//
// It is given a kubeconfig for the workspace that holds the WorkspaceType (root, for the
// example's `universal`) and the type's name; the provider reads the virtual workspace URL from
// WorkspaceType.status.virtualWorkspaces (type initializing).
//
// Exit status: 0 after SIGTERM/SIGINT, 1 when setup fails or the manager stops with an error.
package main

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager/signals"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	mcbuilder "sigs.k8s.io/multicluster-runtime/pkg/builder"
	mcmanager "sigs.k8s.io/multicluster-runtime/pkg/manager"
	mcreconcile "sigs.k8s.io/multicluster-runtime/pkg/reconcile"

	kcpcore "github.com/kcp-dev/sdk/apis/core"
	corev1alpha1 "github.com/kcp-dev/sdk/apis/core/v1alpha1"
	"github.com/kcp-dev/sdk/apis/tenancy/initialization"
	tenancyv1alpha1 "github.com/kcp-dev/sdk/apis/tenancy/v1alpha1"

	"github.com/kcp-dev/multicluster-provider/initializingworkspaces"

	"github.com/vwproxy/vwproxy/tests/go/internal/program"
)

func main() {
	var (
		kubeconfig    = flag.String("kubeconfig", "", "kubeconfig for the workspace that holds the WorkspaceType (required)")
		workspaceType = flag.String("workspace-type", "universal", "name of the WorkspaceType whose initializer this is")
		configMap     = flag.String("configmap", "initialized", "name of the ConfigMap created in namespace default of each workspace")
		vwWait        = flag.Duration("vw-wait", 10*time.Second, "how long to wait for the initializing virtual workspace to serve logicalclusters before giving up")
		verbose       = flag.Bool("v", false, "debug logging")
	)
	flag.Parse()
	logger := program.SetupLogging(*verbose)
	if *kubeconfig == "" {
		program.Fail(logger, fmt.Errorf("--kubeconfig is required"), "bad flags")
	}

	cfg, err := program.LoadConfig(*kubeconfig)
	if err != nil {
		program.Fail(logger, err, "loading kubeconfig", "path", *kubeconfig)
	}
	scheme := program.NewScheme()
	ctx := signals.SetupSignalHandler()

	// The initializer's name is the type's logical cluster and name ("root:universal"): read it
	// from the WorkspaceType itself rather than trusting a flag.
	direct, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		program.Fail(logger, err, "creating a client", "host", cfg.Host)
	}
	wst := &tenancyv1alpha1.WorkspaceType{}
	if err := direct.Get(ctx, types.NamespacedName{Name: *workspaceType}, wst); err != nil {
		program.Fail(logger, err, "reading the WorkspaceType", "host", cfg.Host, "name", *workspaceType)
	}
	initializer := initialization.InitializerForType(wst)
	logger.Info("following the initializing virtual workspace", "host", cfg.Host, "workspaceType", *workspaceType,
		"initializer", initializer, "virtualWorkspaces", wst.Status.VirtualWorkspaces)

	if err := waitForVirtualWorkspace(ctx, cfg, wst, *vwWait); err != nil {
		program.Fail(logger, err, "the initializing virtual workspace is not served")
	}

	provider, err := initializingworkspaces.New(cfg, *workspaceType, initializingworkspaces.Options{Scheme: scheme})
	if err != nil {
		program.Fail(logger, err, "creating the initializingworkspaces provider")
	}
	mgr, err := mcmanager.New(cfg, provider, program.ManagerOptions(scheme))
	if err != nil {
		program.Fail(logger, err, "creating the manager")
	}
	reconciler := &workspaceInitializer{manager: mgr, initializer: initializer, configMap: *configMap}
	if err := mcbuilder.ControllerManagedBy(mgr).Named("initializer").For(&corev1alpha1.LogicalCluster{}).Complete(reconciler); err != nil {
		program.Fail(logger, err, "building the controller")
	}

	logger.Info("starting manager")
	if err := mgr.Start(ctx); err != nil {
		program.Fail(logger, err, "manager stopped")
	}
	logger.Info("stopped cleanly")
}

// workspaceInitializer seeds a workspace with a ConfigMap, then lets it go Ready.
type workspaceInitializer struct {
	manager     mcmanager.Manager
	initializer corev1alpha1.LogicalClusterInitializer
	configMap   string
}

func (r *workspaceInitializer) Reconcile(ctx context.Context, req mcreconcile.Request) (reconcile.Result, error) {
	logger := log.FromContext(ctx).WithValues("cluster", req.ClusterName)
	cluster, err := r.manager.GetCluster(ctx, req.ClusterName)
	if err != nil {
		return reconcile.Result{}, fmt.Errorf("cluster %q: %w", req.ClusterName, err)
	}
	// The initializing provider's client reads live through the virtual workspace.
	c := cluster.GetClient()

	lc := &corev1alpha1.LogicalCluster{}
	if err := c.Get(ctx, req.NamespacedName, lc); err != nil {
		if apierrors.IsNotFound(err) {
			logger.Info("logical cluster no longer initializing")
			return reconcile.Result{}, nil
		}
		return reconcile.Result{}, fmt.Errorf("reading logical cluster: %w", err)
	}
	if !slices.Contains(lc.Status.Initializers, r.initializer) {
		logger.Info("initializer already removed", "initializers", lc.Status.Initializers)
		return reconcile.Result{}, nil
	}
	path := lc.Annotations[kcpcore.LogicalClusterPathAnnotationKey]
	logger = logger.WithValues("workspace", path)

	seed := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: r.configMap, Namespace: "default"},
		Data:       map[string]string{"initializer": string(r.initializer), "workspace": path},
	}
	if err := c.Create(ctx, seed); err != nil && !apierrors.IsAlreadyExists(err) {
		return reconcile.Result{}, fmt.Errorf("creating configmap default/%s: %w", r.configMap, err)
	}
	logger.Info("configmap in place", "configmap", r.configMap)

	// A merge patch of the remaining list, as kcp's own initializers finish.
	before := lc.DeepCopy()
	lc.Status.Initializers = initialization.EnsureInitializerAbsent(r.initializer, lc.Status.Initializers)
	if err := c.Status().Patch(ctx, lc, client.MergeFrom(before)); err != nil {
		return reconcile.Result{}, fmt.Errorf("removing initializer %q: %w", r.initializer, err)
	}
	logger.Info("initializer removed", "remaining", lc.Status.Initializers)
	return reconcile.Result{}, nil
}

// waitForVirtualWorkspace fails fast, with the URL and the last answer, when no initializing
// virtual workspace of the type serves logicalclusters: the provider only logs a failed start
// and would wait forever for the next WorkspaceType change.
func waitForVirtualWorkspace(ctx context.Context, cfg *rest.Config, wst *tenancyv1alpha1.WorkspaceType, timeout time.Duration) error {
	var urls []string
	for _, vw := range wst.Status.VirtualWorkspaces {
		if strings.Contains(vw.URL, "/initializingworkspaces/") {
			urls = append(urls, vw.URL)
		}
	}
	if len(urls) == 0 {
		return fmt.Errorf("WorkspaceType %s lists no initializing virtual workspace in status.virtualWorkspaces", wst.Name)
	}
	var last error
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		for _, url := range urls {
			wildcard := rest.CopyConfig(cfg)
			wildcard.Host = url + "/clusters/*"
			dc, err := discovery.NewDiscoveryClientForConfig(wildcard)
			if err != nil {
				return false, err
			}
			resources, err := dc.ServerResourcesForGroupVersion(corev1alpha1.SchemeGroupVersion.String())
			if err != nil {
				last = fmt.Errorf("%s: discovery of %s: %w", url, corev1alpha1.SchemeGroupVersion, err)
				return false, nil
			}
			if !slices.ContainsFunc(resources.APIResources, func(r metav1.APIResource) bool { return r.Name == "logicalclusters" }) {
				last = fmt.Errorf("%s: discovery of %s does not list logicalclusters", url, corev1alpha1.SchemeGroupVersion)
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil && last != nil {
		return fmt.Errorf("after %s: %w", timeout, last)
	}
	return err
}
