WITH matched AS (
  SELECT *, 'kubernetes_pod_token_minted_by_kubelet' AS sigma_rule, annotations['authentication.kubernetes.io/issued-credential-id'] AS credential_id FROM (SELECT * FROM k8s_audit WHERE verb = 'create' AND objectRef.resource = 'serviceaccounts' AND objectRef.subresource = 'token' AND responseStatus.code = 201 AND startswith(user.username, 'system:node:') AND startswith(annotations['authentication.kubernetes.io/issued-credential-id'], 'JTI=') AND (stage = 'ResponseComplete' OR stage = 'Panic' OR stage is null))
  UNION ALL
  SELECT *, 'kubernetes_pod_token_used' AS sigma_rule, user.extra['authentication.kubernetes.io/credential-id'][0] AS credential_id FROM (SELECT * FROM k8s_audit WHERE exists(user.extra['authentication.kubernetes.io/credential-id'], _e -> startswith(_e, '')) AND exists(user.extra['authentication.kubernetes.io/pod-name'], _e -> startswith(_e, '')) AND (stage = 'ResponseComplete' OR stage = 'Panic' OR stage is null))
),
events AS (
  SELECT credential_id AS credential_id, element_at(sourceIPs, -1) AS sigma_value, sigma_rule,
    try_to_timestamp(requestReceivedTimestamp) AS sigma_time, auditID AS sigma_event
  FROM matched WHERE try_to_timestamp(requestReceivedTimestamp) IS NOT NULL AND credential_id IS NOT NULL AND element_at(sourceIPs, -1) IS NOT NULL
),
windows AS (
  SELECT *, size(collect_set(sigma_value) OVER (PARTITION BY credential_id ORDER BY CAST(sigma_time AS DOUBLE) RANGE BETWEEN 3600 PRECEDING AND CURRENT ROW)) AS sigma_metric,
    min(sigma_time) OVER (PARTITION BY credential_id ORDER BY CAST(sigma_time AS DOUBLE) RANGE BETWEEN 3600 PRECEDING AND CURRENT ROW) AS sigma_window_start
  FROM events
),
fired AS (
  SELECT credential_id, min(sigma_window_start) AS first_seen, max(sigma_time) AS last_seen,
    max(sigma_metric) AS value_count
  FROM windows WHERE sigma_metric >= 3
  GROUP BY credential_id
)
SELECT fired.credential_id, fired.first_seen, fired.last_seen, fired.value_count,
  array_sort(collect_list(e.sigma_event)) AS events
FROM fired JOIN events AS e
  ON e.sigma_time BETWEEN fired.first_seen AND fired.last_seen AND e.credential_id <=> fired.credential_id
GROUP BY fired.credential_id, fired.first_seen, fired.last_seen, fired.value_count
