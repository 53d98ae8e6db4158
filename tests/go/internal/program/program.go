// Package program holds what every controller program in this module shares: logging, the
// kubeconfig, the scheme with kcp's types, and manager options that suit a test run.
package program

import (
	"fmt"
	"os"

	"github.com/go-logr/logr"
	"go.uber.org/zap/zapcore"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	apisv1alpha1 "github.com/kcp-dev/sdk/apis/apis/v1alpha1"
	corev1alpha1 "github.com/kcp-dev/sdk/apis/core/v1alpha1"
	tenancyv1alpha1 "github.com/kcp-dev/sdk/apis/tenancy/v1alpha1"
)

// SetupLogging sends controller-runtime's and client-go's logs to stderr as plain lines
// without stack traces, so a test that fails can show what the controller saw.
func SetupLogging(debug bool) logr.Logger {
	level := zapcore.InfoLevel
	if debug {
		level = zapcore.DebugLevel
	}
	logger := zap.New(zap.ConsoleEncoder(), zap.Level(level), zap.StacktraceLevel(zapcore.DPanicLevel), zap.WriteTo(os.Stderr))
	log.SetLogger(logger)
	klog.SetLogger(logger)
	return logger.WithName("main")
}

// Fail logs why the program cannot go on and exits with status 1.
func Fail(logger logr.Logger, err error, msg string, keysAndValues ...any) {
	logger.Error(err, msg, keysAndValues...)
	os.Exit(1)
}

// LoadConfig reads a kubeconfig file's current context.
func LoadConfig(path string) (*rest.Config, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	return cfg, nil
}

// NewScheme is client-go's scheme plus kcp's apis, core and tenancy types, which the
// providers read (endpoint slices, APIBindings, WorkspaceTypes, LogicalClusters).
func NewScheme() *runtime.Scheme {
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(apisv1alpha1.AddToScheme(scheme))
	utilruntime.Must(corev1alpha1.AddToScheme(scheme))
	utilruntime.Must(tenancyv1alpha1.AddToScheme(scheme))
	return scheme
}

// ManagerOptions turns off the metrics and health listeners: tests run several controllers
// at once on a shared machine, and a fixed port would collide.
func ManagerOptions(scheme *runtime.Scheme) manager.Options {
	return manager.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
	}
}
