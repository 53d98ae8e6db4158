package program

import (
	"github.com/go-logr/logr"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager/signals"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	mcbuilder "sigs.k8s.io/multicluster-runtime/pkg/builder"
	mcmanager "sigs.k8s.io/multicluster-runtime/pkg/manager"
	mcreconcile "sigs.k8s.io/multicluster-runtime/pkg/reconcile"

	"github.com/kcp-dev/multicluster-provider/apiexport"
)

// RunAPIExportController follows the endpoint slice with kcp's apiexport provider and runs one
// controller, named `name`, for `object` in every bound cluster until SIGTERM/SIGINT. The
// reconciler is made with the manager, which is how it reaches each cluster. Setup failures
// and a manager that stops with an error end the program (exit 1).
func RunAPIExportController(logger logr.Logger, cfg *rest.Config, endpointSlice, name string, object client.Object,
	newReconciler func(mcmanager.Manager) reconcile.TypedReconciler[mcreconcile.Request]) {
	scheme := NewScheme()
	provider, err := apiexport.New(cfg, endpointSlice, apiexport.Options{Scheme: scheme})
	if err != nil {
		Fail(logger, err, "creating the apiexport provider")
	}
	mgr, err := mcmanager.New(cfg, provider, ManagerOptions(scheme))
	if err != nil {
		Fail(logger, err, "creating the manager")
	}
	if err := mcbuilder.ControllerManagedBy(mgr).Named(name).For(object).Complete(newReconciler(mgr)); err != nil {
		Fail(logger, err, "building the controller")
	}
	logger.Info("starting manager")
	if err := mgr.Start(signals.SetupSignalHandler()); err != nil {
		Fail(logger, err, "manager stopped")
	}
	logger.Info("stopped cleanly")
}
