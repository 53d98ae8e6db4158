// Command openapi-gen writes vwproxy/data/openapi/builtin.json: the OpenAPI v3 component
// schemas of the kinds vwproxy serves itself, for `kubectl explain` and friends.
//
// Kubernetes kinds come from Kubernetes' own published OpenAPI v3 documents
// (api/openapi-spec/v3/*.json in the k8s.io/kubernetes module, the output of
// GetOpenAPIDefinitions run through a real kube-apiserver), fetched through the Go module
// proxy with `go mod download` and checked against a pinned module hash. The module is read as
// data only: it is never built, so its staging replace directives do not matter.
//
// kcp kinds (apis.kcp.io, core.kcp.io, tenancy.kcp.io) are hand-written below (kcpComponents),
// because kcp's SDK is not on the Go module proxy.
//
// The output holds the transitive closure, over $ref, of the served kinds, their lists,
// meta.v1 Status and DeleteOptions:
//
//	{"schemas": {<component name>: <schema>}, "kinds": {"<group>/<version>/<Kind>": <component name>}, "source": "..."}
//
// Regenerate, from the repository root:
//
//	cd tools/openapi-gen && go run .
//
// Flags: -out (default ../../vwproxy/data/openapi/builtin.json), -kubernetes-version (default
// v1.37.2; another version skips the pinned-hash check), -spec-dir (read the documents from a
// directory, e.g. a kubernetes checkout's api/openapi-spec/v3, with no network).
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
)

const (
	kubernetesModule  = "k8s.io/kubernetes"
	kubernetesVersion = "v1.37.2"
	// The go.sum hash of k8s.io/kubernetes@v1.37.2; a different version skips the check.
	kubernetesSum = "h1:A2VDEiObzkYqFTKhSsn0ZEb0RlLEXpHWj93gi2HqEwE="
	specSubdir    = "api/openapi-spec/v3"

	refPrefix     = "#/components/schemas/"
	gvkExtension  = "x-kubernetes-group-version-kind"
	metaStatus    = "io.k8s.apimachinery.pkg.apis.meta.v1.Status"
	metaDelete    = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions"
	rbacGroup     = "rbac.authorization.k8s.io"
	defaultOutput = "../../vwproxy/data/openapi/builtin.json"
)

// GVK is one served kind.
type GVK struct{ Group, Version, Kind string }

func (g GVK) key() string { return g.Group + "/" + g.Version + "/" + g.Kind }

// Schema is one OpenAPI v3 schema, as decoded JSON.
type Schema = map[string]any

// kubernetesKinds are the Kubernetes kinds vwproxy serves (vwproxy/kube/resources.py).
var kubernetesKinds = []GVK{
	{"", "v1", "ConfigMap"},
	{"", "v1", "Secret"},
	{"", "v1", "Namespace"},
	{"", "v1", "ServiceAccount"},
	{"", "v1", "Event"},
	{"events.k8s.io", "v1", "Event"},
	{rbacGroup, "v1", "Role"},
	{rbacGroup, "v1", "ClusterRole"},
	{rbacGroup, "v1", "RoleBinding"},
	{rbacGroup, "v1", "ClusterRoleBinding"},
	{"apiextensions.k8s.io", "v1", "CustomResourceDefinition"},
}

// extraRoots are components that served paths refer to besides the kinds.
var extraRoots = []string{metaStatus, metaDelete}

func main() {
	out := flag.String("out", defaultOutput, "where to write the JSON")
	version := flag.String("kubernetes-version", kubernetesVersion, "k8s.io/kubernetes module version to read the OpenAPI v3 documents from")
	specDir := flag.String("spec-dir", "", "read the OpenAPI v3 documents from this directory instead of the k8s.io/kubernetes module (offline use)")
	flag.Parse()
	if err := run(*out, *version, *specDir); err != nil {
		fmt.Fprintln(os.Stderr, "openapi-gen:", err)
		os.Exit(1)
	}
}

func run(out, version, specDir string) error {
	source := fmt.Sprintf("%s@%s %s", kubernetesModule, version, specSubdir)
	if specDir == "" {
		dir, err := downloadModule(kubernetesModule, version)
		if err != nil {
			return err
		}
		specDir = filepath.Join(dir, specSubdir)
	} else {
		source = specDir
	}
	pool, err := loadComponents(specDir, kubernetesKinds)
	if err != nil {
		return err
	}

	kinds := map[string]string{}
	var roots []string
	for _, gvk := range kubernetesKinds {
		for _, k := range []GVK{gvk, {gvk.Group, gvk.Version, gvk.Kind + "List"}} {
			name, err := componentFor(pool, k)
			if err != nil {
				return err
			}
			kinds[k.key()] = name
			roots = append(roots, name)
		}
	}
	roots = append(roots, extraRoots...)

	for name, schema := range kcpComponents(pool) {
		if _, clash := pool[name]; clash {
			return fmt.Errorf("kcp component %s clashes with a Kubernetes one", name)
		}
		pool[name] = schema
		for _, gvk := range gvksOf(schema) {
			kinds[gvk.key()] = name
		}
		roots = append(roots, name)
	}

	schemas, err := closure(pool, roots)
	if err != nil {
		return err
	}
	doc := map[string]any{
		"schemas": schemas,
		"kinds":   kinds,
		"source":  source + "; kcp kinds hand-written in tools/openapi-gen/main.go",
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", " ")
	if err := enc.Encode(doc); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	tmp := out + ".tmp"
	if err := os.WriteFile(tmp, buf.Bytes(), 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, out); err != nil {
		return err
	}
	fmt.Printf("wrote %s: %d schemas, %d kinds, %d bytes (from %s)\n", out, len(schemas), len(kinds), buf.Len(), source)
	return nil
}

// downloadModule fetches a module through GOPROXY (verified against GOSUMDB) and returns its
// directory in the module cache.
func downloadModule(path, version string) (string, error) {
	cmd := exec.Command("go", "mod", "download", "-json", path+"@"+version)
	cmd.Dir = os.TempDir() // outside any module, so this tool's go.mod stays free of it
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=")
	cmd.Stderr = os.Stderr
	raw, err := cmd.Output()
	var info struct{ Dir, Sum, Error string }
	if jerr := json.Unmarshal(raw, &info); jerr == nil && info.Error != "" {
		return "", fmt.Errorf("go mod download %s@%s: %s", path, version, info.Error)
	}
	if err != nil {
		return "", fmt.Errorf("go mod download %s@%s: %w", path, version, err)
	}
	if version == kubernetesVersion && info.Sum != kubernetesSum {
		return "", fmt.Errorf("%s@%s has hash %s, want %s", path, version, info.Sum, kubernetesSum)
	}
	return info.Dir, nil
}

// specFile is the name Kubernetes gives a group version's document in api/openapi-spec/v3.
func specFile(group, version string) string {
	if group == "" {
		return "api__" + version + "_openapi.json"
	}
	return "apis__" + group + "__" + version + "_openapi.json"
}

// loadComponents merges the component schemas of the group versions of kinds. A component
// present in several documents must be the same everywhere except for its GVK list, which is
// the union (meta.v1 DeleteOptions is registered in every group).
func loadComponents(dir string, kinds []GVK) (map[string]Schema, error) {
	pool := map[string]Schema{}
	seen := map[string]bool{}
	for _, k := range kinds {
		file := specFile(k.Group, k.Version)
		if seen[file] {
			continue
		}
		seen[file] = true
		raw, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil {
			return nil, err
		}
		var doc struct {
			Components struct {
				Schemas map[string]Schema `json:"schemas"`
			} `json:"components"`
		}
		if err := json.Unmarshal(raw, &doc); err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		for name, schema := range doc.Components.Schemas {
			have, ok := pool[name]
			if !ok {
				pool[name] = schema
				continue
			}
			if !reflect.DeepEqual(withoutGVK(have), withoutGVK(schema)) {
				return nil, fmt.Errorf("component %s differs between documents (%s)", name, file)
			}
			if gvks := unionGVKs(gvksOf(have), gvksOf(schema)); len(gvks) > 0 {
				have[gvkExtension] = gvkList(gvks)
			}
		}
	}
	return pool, nil
}

func withoutGVK(s Schema) Schema {
	c := make(Schema, len(s))
	for k, v := range s {
		if k != gvkExtension {
			c[k] = v
		}
	}
	return c
}

func gvksOf(s Schema) []GVK {
	list, _ := s[gvkExtension].([]any)
	var gvks []GVK
	for _, item := range list {
		m, _ := item.(map[string]any)
		g, _ := m["group"].(string)
		v, _ := m["version"].(string)
		k, _ := m["kind"].(string)
		gvks = append(gvks, GVK{g, v, k})
	}
	return gvks
}

func unionGVKs(a, b []GVK) []GVK {
	set := map[GVK]bool{}
	for _, g := range append(append([]GVK{}, a...), b...) {
		set[g] = true
	}
	out := make([]GVK, 0, len(set))
	for g := range set {
		out = append(out, g)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].key() < out[j].key() })
	return out
}

func gvkList(gvks []GVK) []any {
	list := make([]any, 0, len(gvks))
	for _, g := range gvks {
		list = append(list, map[string]any{"group": g.Group, "version": g.Version, "kind": g.Kind})
	}
	return list
}

// componentFor finds the one component whose GVK list names k.
func componentFor(pool map[string]Schema, k GVK) (string, error) {
	var found []string
	for name, schema := range pool {
		for _, g := range gvksOf(schema) {
			if g == k {
				found = append(found, name)
			}
		}
	}
	if len(found) != 1 {
		sort.Strings(found)
		return "", fmt.Errorf("kind %s: want one component, found %v", k.key(), found)
	}
	return found[0], nil
}

// closure returns roots and every component they reach through $ref.
func closure(pool map[string]Schema, roots []string) (map[string]Schema, error) {
	out := map[string]Schema{}
	todo := append([]string{}, roots...)
	for len(todo) > 0 {
		name := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		if _, done := out[name]; done {
			continue
		}
		schema, ok := pool[name]
		if !ok {
			return nil, fmt.Errorf("unresolved component %s", name)
		}
		out[name] = schema
		for _, ref := range refsOf(schema) {
			if !strings.HasPrefix(ref, refPrefix) {
				return nil, fmt.Errorf("%s: unsupported $ref %q", name, ref)
			}
			todo = append(todo, strings.TrimPrefix(ref, refPrefix))
		}
	}
	return out, nil
}

// refsOf lists the $ref targets inside a schema. Only string values count: JSONSchemaProps
// has a property named "$ref" whose value is a schema.
func refsOf(v any) []string {
	var refs []string
	switch t := v.(type) {
	case map[string]any:
		for k, child := range t {
			if s, ok := child.(string); ok && k == "$ref" {
				refs = append(refs, s)
			} else {
				refs = append(refs, refsOf(child)...)
			}
		}
	case []any:
		for _, child := range t {
			refs = append(refs, refsOf(child)...)
		}
	}
	return refs
}

// ===========================================================================
// Hand-written schemas for the kcp kinds vwproxy serves. kcp's SDK is not on the Go module
// proxy, so these are a compact description of the fields (kcp-reference.md sections 3, 6 and
// 8, and kcp's API types), named the way kube-apiserver names CRD-served kinds
// (io.kcp.apis.v1alpha2.APIExport). They are for reading, not for rejecting: every object
// keeps unknown fields, nothing is required and no enum is enforced.

const (
	coreGroupV1   = "io.k8s.api.core.v1."
	apiextV1      = "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1."
	metaV1        = "io.k8s.apimachinery.pkg.apis.meta.v1."
	standardKind  = coreGroupV1 + "ConfigMap"
	standardList  = coreGroupV1 + "ConfigMapList"
	preserveField = "x-kubernetes-preserve-unknown-fields"
)

func kcpComponents(pool map[string]Schema) map[string]Schema {
	out := map[string]Schema{}
	add := func(group, version, kind, description string, spec, status Schema) {
		name := reverseDomain(group) + "." + version + "." + kind
		props := Schema{}
		for _, p := range []string{"apiVersion", "kind", "metadata"} {
			props[p] = property(pool, standardKind, p)
		}
		if spec != nil {
			props["spec"] = spec
		}
		if status != nil {
			props["status"] = status
		}
		out[name] = Schema{
			"type":        "object",
			"description": description,
			"properties":  props,
			gvkExtension:  gvkList([]GVK{{group, version, kind}}),
		}
		out[name+"List"] = Schema{
			"type":        "object",
			"description": kind + "List is a list of " + kind + " objects.",
			"required":    []any{"items"},
			"properties": Schema{
				"apiVersion": property(pool, standardList, "apiVersion"),
				"kind":       property(pool, standardList, "kind"),
				"metadata":   property(pool, standardList, "metadata"),
				"items":      refArray("items is the list of "+kind+" objects.", name),
			},
			gvkExtension: gvkList([]GVK{{group, version, kind + "List"}}),
		}
	}

	const apis, core, tenancy = "apis.kcp.io", "core.kcp.io", "tenancy.kcp.io"
	add(apis, "v1alpha1", "APIExport", apiExportDescription, apiExportSpecV1alpha1(), apiExportStatus())
	add(apis, "v1alpha2", "APIExport", apiExportDescription, apiExportSpecV1alpha2(), apiExportStatus())
	add(apis, "v1alpha1", "APIBinding", apiBindingDescription, apiBindingSpec(acceptableClaimV1alpha1()), apiBindingStatus(claimV1alpha1()))
	add(apis, "v1alpha2", "APIBinding", apiBindingDescription, apiBindingSpec(acceptableClaimV1alpha2()), apiBindingStatus(claimV1alpha2(false)))
	add(apis, "v1alpha1", "APIExportEndpointSlice",
		"APIExportEndpointSlice lists the URLs of an APIExport's virtual workspace: one endpoint per shard that hosts at least one APIBinding to the export (and matches the partition). kcp creates one per APIExport, named like it, unless the export has the annotation apiexports.apis.kcp.io/skip-endpointslice.",
		endpointSliceSpec(), endpointSliceStatus())
	add(apis, "v1alpha1", "APIResourceSchema",
		"APIResourceSchema describes one resource (group, names, scope and versions with their schemas) that an APIExport can export. It is immutable, and cannot be deleted while an APIExport in the same workspace refers to it.",
		apiResourceSchemaSpec(), nil)
	add(core, "v1alpha1", "LogicalCluster",
		"LogicalCluster describes the workspace it lives in. Every workspace has exactly one, named \"cluster\"; it carries the workspace's phase and its pending initializers and terminators, and is used to authorize requests to the workspace. Labels: tenancy.kcp.io/phase=<phase>, plus one initializer.internal.kcp.io/ or terminator.internal.kcp.io/ label per pending entry.",
		logicalClusterSpec(), logicalClusterStatus())
	add(core, "v1alpha1", "Shard",
		"Shard is one server that holds workspaces and serves their virtual workspaces. Each shard registers itself in the root workspace; endpoint slices list the virtual workspace URL of every shard that hosts at least one binding to the export. vwproxy records the logical clusters a shard serves in its vwproxy.dev/partition annotation (all, none, hash:I/N or clusters:NAME,...).",
		shardSpec(), shardStatus())
	add(tenancy, "v1alpha1", "Workspace",
		"Workspace is a child workspace: a Kubernetes-cluster-like endpoint with its own discovery, OpenAPI and resources, stored in a logical cluster. Standard Kubernetes clients and tools work against its URL.",
		workspaceSpec(), workspaceStatus())
	add(tenancy, "v1alpha1", "WorkspaceType",
		"WorkspaceType defines what workspaces of this type get when they are created (initializers, terminators, default APIBindings, labels) and which parent and child workspace types they allow. Its status lists the initializing and terminating virtual workspace URLs.",
		workspaceTypeSpec(), workspaceTypeStatus())
	return out
}

const (
	apiExportDescription  = "APIExport publishes APIs (APIResourceSchemas) from its workspace, so that other workspaces can bind to them with APIBindings. The provider reaches the objects of all consumers through the APIExport virtual workspace, whose URLs are listed in the APIExportEndpointSlice of the export."
	apiBindingDescription = "APIBinding binds the APIs of an APIExport into this workspace, and records which of the export's permission claims the workspace accepts or rejects."
)

// reverseDomain turns a group into the prefix kube-apiserver gives CRD-served kinds.
func reverseDomain(group string) string {
	parts := strings.Split(group, ".")
	for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
		parts[i], parts[j] = parts[j], parts[i]
	}
	return strings.Join(parts, ".")
}

// property copies a standard field (apiVersion, kind, metadata) from a Kubernetes kind, so
// kcp kinds read like every other kind in `kubectl explain`.
func property(pool map[string]Schema, component, field string) Schema {
	props, _ := pool[component]["properties"].(map[string]any)
	p, _ := props[field].(map[string]any)
	if p == nil {
		panic("no property " + field + " in " + component)
	}
	return p
}

// ---------------------------------------------------------------------------
// Small schema builders.

func str(description string) Schema { return Schema{"type": "string", "description": description} }

func boolean(description string) Schema {
	return Schema{"type": "boolean", "description": description}
}

func object(description string, props Schema) Schema {
	return Schema{"type": "object", "description": description, "properties": props, preserveField: true}
}

func stringMap(description string) Schema {
	return Schema{"type": "object", "description": description, "additionalProperties": Schema{"type": "string"}}
}

func stringList(description, listType string) Schema {
	s := Schema{"type": "array", "description": description, "items": Schema{"type": "string"}}
	if listType != "" {
		s["x-kubernetes-list-type"] = listType
	}
	return s
}

func array(description string, items Schema) Schema {
	return Schema{"type": "array", "description": description, "items": items}
}

// mapList is a list whose entries are identified by keys (server-side apply merges by them).
func mapList(description string, items Schema, keys ...string) Schema {
	s := array(description, items)
	s["x-kubernetes-list-type"] = "map"
	mapKeys := make([]any, len(keys))
	for i, k := range keys {
		mapKeys[i] = k
	}
	s["x-kubernetes-list-map-keys"] = mapKeys
	return s
}

// ref points at another component the way Kubernetes' own schemas do for a single field.
func ref(description, component string) Schema {
	return Schema{"description": description, "allOf": []any{Schema{"$ref": refPrefix + component}}, "default": Schema{}}
}

func refArray(description, component string) Schema {
	return array(description, Schema{"$ref": refPrefix + component})
}

func dateTime(description string) Schema {
	return Schema{"type": "string", "format": "date-time", "description": description}
}

// ---------------------------------------------------------------------------
// Pieces shared by several kinds.

func conditions(owner string) Schema {
	return array("conditions is the list of conditions that apply to the "+owner+".", object(
		"Condition is one observation of the state of the object.",
		Schema{
			"type":               str("type of the condition in CamelCase, e.g. Ready."),
			"status":             str("status of the condition: True, False or Unknown."),
			"severity":           str("severity tells how bad a False condition is: Error, Warning or Info. Empty when the status is True."),
			"lastTransitionTime": dateTime("lastTransitionTime is when the condition last changed from one status to another."),
			"reason":             str("reason is a one-word CamelCase reason for the last transition."),
			"message":            str("message is a human-readable explanation of the last transition."),
		}))
}

func exportReference(description string) Schema {
	return object(description, Schema{
		"path": str("path is the logical cluster path of the workspace that holds the APIExport, e.g. root:org:provider. When empty, the workspace of this object is used."),
		"name": str("name is the name of the APIExport. Required."),
	})
}

func claimFields() Schema {
	return Schema{
		"group":        str("group is the API group of the claimed resource; empty for the core group."),
		"resource":     str("resource is the claimed resource, e.g. configmaps. Required."),
		"identityHash": str("identityHash is the identity of the APIExport that defines the claimed resource (its status.identityHash). It is required for another export's resource, and empty for built-in resources and apis.kcp.io resources. It is part of the claim's key (group, resource, identityHash)."),
	}
}

func claimV1alpha1() Schema {
	f := claimFields()
	f["all"] = boolean("all claims all objects of the resource.")
	f["resourceSelector"] = array("resourceSelector claims only the objects it names.", object(
		"ResourceSelector names claimed objects.",
		Schema{
			"name":      str("name of a claimed object (its metadata.name). When unset, every object in namespace is claimed."),
			"namespace": str("namespace of the claimed objects (their metadata.namespace). When unset, objects of that name in every namespace are claimed."),
		}))
	return object("PermissionClaim asks for access to a resource that the APIExport does not define itself.", f)
}

func claimV1alpha2(withDefaultSelector bool) Schema {
	f := claimFields()
	f["verbs"] = stringList("verbs the provider asks for on the claimed resource (get, list, watch, create, update, patch, delete, deletecollection, ...). At least one; \"*\" means all verbs.", "set")
	if withDefaultSelector {
		f["defaultSelector"] = claimSelector("defaultSelector is the selector given to the claim in APIBindings that a WorkspaceType creates. It does not apply to other bindings.")
	}
	return object("PermissionClaim asks for access to a resource that the APIExport does not define itself. Claims overlapping the export's own resources are ignored.", f)
}

func claimSelector(description string) Schema {
	return object(description, Schema{
		"matchAll":         boolean("matchAll selects every object of the claimed resource."),
		"matchLabels":      stringMap("matchLabels selects objects with these labels. On writes through the virtual workspace, missing labels are added and conflicting values are refused."),
		"matchExpressions": refArray("matchExpressions selects objects by label requirements, which are ANDed.", metaV1+"LabelSelectorRequirement"),
	})
}

func acceptableClaimV1alpha1() Schema {
	c := claimV1alpha1()
	c["properties"].(Schema)["state"] = str("state records the consumer's decision: Accepted or Rejected. Required.")
	c["description"] = "AcceptablePermissionClaim is a permission claim of the APIExport with the consumer's decision on it."
	return c
}

func acceptableClaimV1alpha2() Schema {
	c := claimV1alpha2(false)
	props := c["properties"].(Schema)
	props["state"] = str("state records the consumer's decision: Accepted or Rejected. Required.")
	props["selector"] = claimSelector("selector limits the claim to matching objects: {\"matchAll\": true}, or matchLabels/matchExpressions. Only matching objects are labelled for the provider and visible to it. Required.")
	c["description"] = "AcceptablePermissionClaim is a permission claim of the APIExport with the consumer's decision on it. Claims are keyed by (group, resource, identityHash)."
	return c
}

func identity() Schema {
	return object("identity names the secret holding the export's identity key (data key \"key\"), which decides where the exported objects are stored. It defaults to the secret kcp-system/<export name>, which kcp creates. The identity cannot be changed.", Schema{
		"secretRef": ref("secretRef is the secret that holds the identity key.", coreGroupV1+"SecretReference"),
	})
}

func maximalPermissionPolicy() Schema {
	return object("maximalPermissionPolicy sets an upper bound on what consumers may do with the exported resources. Without it, only the consumer workspace's own authorization applies.", Schema{
		"local": object("local checks requests additionally against RBAC in the export's workspace, with the user name and groups prefixed by \"apis.kcp.io:binding:\".", Schema{}),
	})
}

// ---------------------------------------------------------------------------
// apis.kcp.io

func apiExportSpecV1alpha1() Schema {
	return object("APIExportSpec is the desired state of the APIExport.", Schema{
		"latestResourceSchemas":   stringList("latestResourceSchemas are the names of the APIResourceSchemas exported, each of the form <version>.<resource>.<group>. Changes affect only bindings made afterwards.", "set"),
		"identity":                identity(),
		"maximalPermissionPolicy": maximalPermissionPolicy(),
		"permissionClaims":        array("permissionClaims ask consumers for access to resources the export does not define (built-in resources, or another export's resources). A claim takes effect only once a binding accepts it.", claimV1alpha1()),
	})
}

func apiExportSpecV1alpha2() Schema {
	return object("APIExportSpec is the desired state of the APIExport.", Schema{
		"resources": mapList("resources are the APIResourceSchemas exported. Changes affect only bindings made afterwards.", object(
			"ResourceSchema is one exported resource.",
			Schema{
				"name":   str("name is the resource (plural) name. Required."),
				"group":  str("group is the API group of the resource; empty for the core group. Required."),
				"schema": str("schema is the name of the APIResourceSchema, of the form <version>.<resource>.<group>. Required."),
				"storage": object("storage says how objects of the resource are stored.", Schema{
					"crd": object("crd stores the objects like custom resources in the consumer workspaces.", Schema{}),
				}),
			}), "name", "group"),
		"identity":                identity(),
		"maximalPermissionPolicy": maximalPermissionPolicy(),
		"permissionClaims":        array("permissionClaims ask consumers for access to resources the export does not define (built-in resources, or another export's resources). A claim takes effect only once a binding accepts it.", claimV1alpha2(true)),
	})
}

func apiExportStatus() Schema {
	return object("APIExportStatus is the observed state of the APIExport.", Schema{
		"identityHash": str("identityHash is the lowercase hex SHA-256 of the identity key text. It is set once and never changes; bindings and claims refer to the export's resources by it."),
		"conditions":   conditions("APIExport, e.g. IdentityValid"),
		"virtualWorkspaces": array("virtualWorkspaces lists APIExport virtual workspace URLs, only when kcp runs with the EnableDeprecatedAPIExportVirtualWorkspacesUrls feature gate. Deprecated: use APIExportEndpointSlice.status.endpoints.", object(
			"VirtualWorkspace is one virtual workspace URL.",
			Schema{"url": str("url of the APIExport virtual workspace.")})),
	})
}

func apiBindingSpec(acceptableClaim Schema) Schema {
	return object("APIBindingSpec is the desired state of the APIBinding.", Schema{
		"reference": object("reference names the APIExport to bind to. It cannot be changed.", Schema{
			"export": exportReference("export is the APIExport, by workspace path and name. The creator needs the verb \"bind\" on it."),
		}),
		"permissionClaims": mapList("permissionClaims accept or reject the export's permission claims. An accepted claim gives the provider the claimed access to matching objects in this workspace.", acceptableClaim, "group", "resource", "identityHash"),
	})
}

func apiBindingStatus(claim Schema) Schema {
	return object("APIBindingStatus is the observed state of the APIBinding.", Schema{
		"apiExportClusterName": str("apiExportClusterName is the name (not the path) of the logical cluster that holds the APIExport."),
		"boundResources": mapList("boundResources are the resources bound into this workspace.", object(
			"BoundAPIResource is one bound resource.",
			Schema{
				"group":    str("group of the bound resource; empty for the core group."),
				"resource": str("resource is the bound resource (plural) name."),
				"schema": object("schema is the APIResourceSchema bound for the resource.", Schema{
					"name":         str("name of the APIResourceSchema."),
					"UID":          str("UID of the APIResourceSchema."),
					"identityHash": str("identityHash is the identity of the APIExport; objects are stored per (group, resource, identityHash)."),
				}),
				"storageVersions": stringList("storageVersions are the versions objects of the resource were ever stored in.", "set"),
			}), "group", "resource"),
		"phase":                   str("phase of the binding: empty (just created), Binding, or Bound."),
		"conditions":              conditions("APIBinding, e.g. Ready, PermissionClaimsValid, PermissionClaimsApplied"),
		"appliedPermissionClaims": array("appliedPermissionClaims are the accepted claims that have been applied to this workspace.", claim),
		"exportPermissionClaims":  array("exportPermissionClaims are the claims the APIExport currently makes.", claim),
	})
}

func endpointSliceSpec() Schema {
	return object("APIExportEndpointSliceSpec is the desired state of the APIExportEndpointSlice.", Schema{
		"export":    exportReference("export is the APIExport whose endpoints are listed. It cannot be changed."),
		"partition": str("partition is the name of a Partition in this workspace; only shards it selects are listed."),
	})
}

func endpointSliceStatus() Schema {
	return object("APIExportEndpointSliceStatus is the observed state of the APIExportEndpointSlice.", Schema{
		"conditions": conditions("APIExportEndpointSlice, e.g. APIExportValid, PartitionValid"),
		"endpoints": mapList("endpoints are the virtual workspace URLs of the export, one per shard, each applied by its shard. Per-cluster requests must go to the endpoint of the shard that hosts the cluster.", object(
			"APIExportEndpoint is one virtual workspace URL.",
			Schema{"url": str("url is <shard virtual workspace URL>/services/apiexport/<export logical cluster>/<export name>.")}), "url"),
	})
}

func apiResourceSchemaSpec() Schema {
	return object("APIResourceSchemaSpec describes the resource.", Schema{
		"group":          str("group is the API group of the resource; empty for the core group. Required."),
		"names":          ref("names are the resource and kind names, as in a CustomResourceDefinition. Required.", apiextV1+"CustomResourceDefinitionNames"),
		"scope":          str("scope is Cluster or Namespaced. Required."),
		"nameValidation": str("nameValidation is how object names are validated: DNS1123Subdomain (the default, as for CRDs) or PathSegmentName."),
		"versions": mapList("versions of the resource; at least one. The schemas must be equal across versions.", object(
			"APIResourceVersion is one version of the resource.",
			Schema{
				"name":                     str("name of the version, e.g. v1 or v2beta1. Required."),
				"served":                   boolean("served enables the version in the REST API."),
				"storage":                  boolean("storage marks the version objects are stored in; exactly one version has it."),
				"deprecated":               boolean("deprecated makes requests to this version get a warning."),
				"deprecationWarning":       str("deprecationWarning replaces the default deprecation warning."),
				"schema":                   Schema{"type": "object", "description": "schema is the OpenAPI v3 structural schema of the version, used for validation, pruning and defaulting.", preserveField: true},
				"subresources":             ref("subresources are the status and scale subresources of the version.", apiextV1+"CustomResourceSubresources"),
				"additionalPrinterColumns": mapList("additionalPrinterColumns are the extra columns of table output.", Schema{"$ref": refPrefix + apiextV1 + "CustomResourceColumnDefinition"}, "name"),
			}), "name"),
		"conversion": object("conversion says how objects are converted between versions. Required when there is more than one version.", Schema{
			"strategy": str("strategy is None (only apiVersion changes) or Webhook."),
			"webhook": object("webhook is the conversion webhook, for the Webhook strategy.", Schema{
				"clientConfig": object("clientConfig says how to call the webhook.", Schema{
					"url":      str("url of the webhook, https://host:port/path."),
					"caBundle": Schema{"type": "string", "format": "byte", "description": "caBundle is a PEM CA bundle for the webhook's serving certificate; the system roots when empty."},
				}),
				"conversionReviewVersions": stringList("conversionReviewVersions are the ConversionReview versions the webhook accepts, preferred first.", "atomic"),
			}),
		}),
	})
}

// ---------------------------------------------------------------------------
// core.kcp.io and tenancy.kcp.io

const phaseDescription = "phase of the logical cluster: Scheduling, Initializing (while initializers remain), Ready, Unavailable, Inactive, Terminating (deleted, while terminators remain) or Deleting."

func logicalClusterSpec() Schema {
	return object("LogicalClusterSpec is the desired state of the LogicalCluster.", Schema{
		"directlyDeletable": boolean("directlyDeletable allows deleting the logical cluster by deleting this object from inside it."),
		"owner": object("owner is the object (usually a Workspace) that controls the life-cycle of this logical cluster. Deleting either one deletes the other.", Schema{
			"apiVersion": str("apiVersion of the owner, <group>/<version>."),
			"resource":   str("resource of the owner."),
			"name":       str("name of the owner."),
			"namespace":  str("namespace of the owner, if it is namespaced."),
			"cluster":    str("cluster is the logical cluster that holds the owner."),
			"uid":        str("uid of the owner."),
		}),
		"initializers": stringList("initializers are set by the system on creation, and copied to status.initializers when initialization starts.", ""),
		"terminators":  stringList("terminators are set by the system on creation, and copied to status.terminators when the logical cluster is deleted.", ""),
	})
}

func shardSpec() Schema {
	return object("ShardSpec says where the shard is reached.", Schema{
		"baseURL":             str("baseURL is the address of the shard's API, as other servers reach it."),
		"externalURL":         str("externalURL is the address clients use for workspaces on this shard."),
		"virtualWorkspaceURL": str("virtualWorkspaceURL is the base of the shard's virtual workspace URLs (<virtualWorkspaceURL>/services/...)."),
	})
}

func shardStatus() Schema {
	return object("ShardStatus is the observed state of the Shard.", Schema{
		"conditions": conditions("Shard"),
	})
}

func logicalClusterStatus() Schema {
	return object("LogicalClusterStatus is the observed state of the LogicalCluster.", Schema{
		"URL":        str("URL is where the workspace is served; standard Kubernetes clients work against it."),
		"phase":      str(phaseDescription),
		"conditions": conditions("LogicalCluster, e.g. WorkspaceInitialized"),
		"initializers": stringList("initializers still pending. Each initializer removes exactly its own entry through the initializing virtual workspace; the workspace becomes Ready when none is left. "+
			"The built-in initializer system:apibindings waits for the default APIBindings.", ""),
		"terminators": stringList("terminators still pending after deletion. Each terminator removes exactly its own entry through the terminating virtual workspace; deletion finishes when none is left.", ""),
	})
}

func workspaceTypeReference(description string) Schema {
	return object(description, Schema{
		"name": str("name of the WorkspaceType (lower case). Required."),
		"path": str("path is the workspace that holds the WorkspaceType, e.g. root:org."),
	})
}

func workspaceSpec() Schema {
	return object("WorkspaceSpec is the desired state of the Workspace.", Schema{
		"type":     workspaceTypeReference("type of the workspace; it defaults to the default child type of the parent workspace's type. It cannot be changed, and using it needs the verb \"use\" on the workspacetypes resource."),
		"location": object("location constrains where the workspace may be scheduled.", Schema{"selector": ref("selector selects the shards the workspace may be scheduled to.", metaV1+"LabelSelector")}),
		"cluster":  str("cluster is the name of the logical cluster that stores the workspace. Set by the system; cannot be changed."),
		"URL":      str("URL is where the workspace is served; standard Kubernetes clients work against it. Set by the system."),
	})
}

func workspaceStatus() Schema {
	return object("WorkspaceStatus is the observed state of the Workspace.", Schema{
		"phase":        str(phaseDescription),
		"conditions":   conditions("Workspace, e.g. WorkspaceScheduled, WorkspaceInitialized"),
		"initializers": stringList("initializers still pending in the workspace's logical cluster.", ""),
		"terminators":  stringList("terminators still pending in the workspace's logical cluster.", ""),
	})
}

func workspaceTypeSelector(description string) Schema {
	return object(description, Schema{
		"none":  boolean("none means that no type matches."),
		"types": array("types that match; a type that extends one of them matches too.", workspaceTypeReference("WorkspaceTypeReference names a WorkspaceType.")),
	})
}

func workspaceTypeSpec() Schema {
	return object("WorkspaceTypeSpec is the desired state of the WorkspaceType.", Schema{
		"initializer": boolean("initializer gives workspaces of this type an initializer named <workspace of the type>:<type name>, e.g. root:universal. Its controller finishes through the initializing virtual workspace."),
		"terminator":  boolean("terminator gives workspaces of this type a terminator named <workspace of the type>:<type name>, handled through the terminating virtual workspace."),
		"extend": object("extend inherits the initializers, terminators and parent/child constraints of other types.", Schema{
			"with": array("with are the extended types.", workspaceTypeReference("WorkspaceTypeReference names a WorkspaceType.")),
		}),
		"additionalWorkspaceLabels": stringMap("additionalWorkspaceLabels are added to workspaces of this type on creation."),
		"defaultChildWorkspaceType": workspaceTypeReference("defaultChildWorkspaceType is the type of child workspaces created without one."),
		"limitAllowedChildren":      workspaceTypeSelector("limitAllowedChildren restricts the types of child workspaces."),
		"limitAllowedParents":       workspaceTypeSelector("limitAllowedParents restricts the types of parent workspaces."),
		"defaultAPIBindings": array("defaultAPIBindings are the APIExports bound in new workspaces of this type during initialization (initializer system:apibindings).", object(
			"APIExportReference names an APIExport.",
			Schema{
				"path":   str("path is the workspace that holds the APIExport; the current workspace when empty."),
				"export": str("export is the name of the APIExport. Required."),
			})),
	})
}

func workspaceTypeStatus() Schema {
	return object("WorkspaceTypeStatus is the observed state of the WorkspaceType.", Schema{
		"conditions": conditions("WorkspaceType, e.g. VirtualWorkspaceURLsReady"),
		"virtualWorkspaces": array("virtualWorkspaces are the initializing and terminating virtual workspace URLs of every shard, sorted by shard name. Clients pick one by the substring /initializingworkspaces/ or /terminatingworkspaces/.", object(
			"VirtualWorkspace is one virtual workspace URL.",
			Schema{
				"url":  str("url of the virtual workspace."),
				"type": str("type is initializing or terminating."),
			})),
	})
}
