{{- define "plantd-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "plantd-operator.selectorLabels" -}}
app.kubernetes.io/name: plantd-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "plantd-operator.labels" -}}
{{ include "plantd-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: plantd
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "plantd-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "plantd-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Rules on the objects a PlantdCluster owns, in its namespace. Least privilege:
     no list/watch on Secrets; delete only where a feature can be switched off. */}}
{{- define "plantd-operator.namespacedRules" -}}
- apiGroups: ["plantd.io"]
  resources: ["plantdclusters"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["plantd.io"]
  resources: ["plantdclusters/status"]
  verbs: ["get", "patch"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "patch"]
# delete: the edge Service is pruned when sidecars.grpc.edge is turned off (only children
# the PlantdCluster owns are ever deleted).
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["serviceaccounts", "secrets"]
  verbs: ["get", "create", "patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "create", "patch"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "list", "create", "patch", "delete"]
- apiGroups: ["security.istio.io"]
  resources: ["peerauthentications", "authorizationpolicies", "requestauthentications"]
  verbs: ["get", "list", "create", "patch", "delete"]
- apiGroups: ["networking.istio.io"]
  resources: ["destinationrules"]
  verbs: ["get", "list", "create", "patch", "delete"]
- apiGroups: ["monitoring.coreos.com"]
  resources: ["servicemonitors", "prometheusrules"]
  verbs: ["get", "list", "create", "patch", "delete"]
{{- end -}}

{{- define "plantd-operator.leaseName" -}}
{{- default (include "plantd-operator.fullname" .) .Values.leaderElection.leaseName -}}
{{- end -}}

{{/* The plantd image, for the operator and the test pods. */}}
{{- define "plantd-operator.image" -}}
"{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}"
{{- end -}}

{{/* Pod securityContext of every pod the chart runs: the image contract's uid, restricted. */}}
{{- define "plantd-operator.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}
