WITH matched AS (
  SELECT *, 'kubernetes_serviceaccount_token_minted' AS sigma_rule FROM (SELECT * FROM k8s_audit WHERE verb = 'create' AND objectRef.resource = 'serviceaccounts' AND objectRef.subresource = 'token' AND responseStatus.code = 201 AND (stage = 'ResponseComplete' OR stage = 'Panic' OR stage is null) AND NOT (startswith(user.username, 'system:node:') OR user.username = 'system:kube-controller-manager') AND NOT ((user.username = 'system:serviceaccount:calico-system:calico-node' OR user.username = 'system:serviceaccount:kube-system:calico-node') AND (objectRef.name = 'calico-cni-plugin' OR objectRef.name = 'calico-node') OR user.username = 'system:serviceaccount:tigera-operator:tigera-operator' AND objectRef.namespace = 'calico-system'))
),
events AS (
  SELECT user.username AS user_username, requestURI AS sigma_value, sigma_rule,
    try_to_timestamp(requestReceivedTimestamp) AS sigma_time, auditID AS sigma_event
  FROM matched WHERE try_to_timestamp(requestReceivedTimestamp) IS NOT NULL AND user.username IS NOT NULL AND requestURI IS NOT NULL
),
windows AS (
  SELECT *, size(collect_set(sigma_value) OVER (PARTITION BY user_username ORDER BY CAST(sigma_time AS DOUBLE) RANGE BETWEEN 600 PRECEDING AND CURRENT ROW)) AS sigma_metric,
    min(sigma_time) OVER (PARTITION BY user_username ORDER BY CAST(sigma_time AS DOUBLE) RANGE BETWEEN 600 PRECEDING AND CURRENT ROW) AS sigma_window_start
  FROM events
),
fired AS (
  SELECT user_username, min(sigma_window_start) AS first_seen, max(sigma_time) AS last_seen,
    max(sigma_metric) AS value_count
  FROM windows WHERE sigma_metric >= 3
  GROUP BY user_username
)
SELECT fired.user_username, fired.first_seen, fired.last_seen, fired.value_count,
  array_sort(collect_list(e.sigma_event)) AS events
FROM fired JOIN events AS e
  ON e.sigma_time BETWEEN fired.first_seen AND fired.last_seen AND e.user_username <=> fired.user_username
GROUP BY fired.user_username, fired.first_seen, fired.last_seen, fired.value_count
