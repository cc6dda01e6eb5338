WITH matched AS (
  SELECT *, 'kubernetes_serviceaccount_token_request_denied' AS sigma_rule FROM (SELECT * FROM k8s_audit WHERE verb = 'create' AND objectRef.resource = 'serviceaccounts' AND objectRef.subresource = 'token' AND responseStatus.code = 403 AND (stage = 'ResponseComplete' OR stage = 'Panic' OR stage is null) AND NOT (startswith(user.username, 'system:node:') OR user.username = 'system:kube-controller-manager') AND NOT user.username = 'aksService')
  UNION ALL
  SELECT *, 'kubernetes_serviceaccount_token_minted' AS sigma_rule FROM (SELECT * FROM k8s_audit WHERE verb = 'create' AND objectRef.resource = 'serviceaccounts' AND objectRef.subresource = 'token' AND responseStatus.code = 201 AND (stage = 'ResponseComplete' OR stage = 'Panic' OR stage is null) AND NOT (startswith(user.username, 'system:node:') OR user.username = 'system:kube-controller-manager') AND NOT user.username = 'aksService')
),
events AS (
  SELECT user.username AS user_username, sigma_rule,
    try_to_timestamp(requestReceivedTimestamp) AS sigma_time, auditID AS sigma_event
  FROM matched WHERE try_to_timestamp(requestReceivedTimestamp) IS NOT NULL AND user.username IS NOT NULL
),
chain1 AS (
  SELECT *, CASE WHEN sigma_rule = 'kubernetes_serviceaccount_token_request_denied' THEN sigma_time END AS sigma_start1
  FROM events
),
chain2 AS (
  SELECT *, CASE WHEN sigma_rule = 'kubernetes_serviceaccount_token_minted' THEN max(sigma_start1) OVER (PARTITION BY user_username ORDER BY CAST(sigma_time AS DOUBLE) RANGE BETWEEN 900 PRECEDING AND 0.000001 PRECEDING) END AS sigma_start2
  FROM chain1
),
windows AS (
  SELECT *, sigma_start2 IS NOT NULL AND CAST(sigma_time AS DOUBLE) - CAST(sigma_start2 AS DOUBLE) <= 900 AS sigma_metric,
    min(sigma_start1) OVER (PARTITION BY user_username ORDER BY CAST(sigma_time AS DOUBLE) RANGE BETWEEN 900 PRECEDING AND CURRENT ROW) AS sigma_window_start
  FROM chain2
),
fired AS (
  SELECT user_username, min(sigma_window_start) AS first_seen, max(sigma_time) AS last_seen,
    max(sigma_metric) AS temporal_ordered
  FROM windows WHERE sigma_metric
  GROUP BY user_username
)
SELECT fired.user_username, fired.first_seen, fired.last_seen, fired.temporal_ordered,
  array_sort(collect_list(e.sigma_event)) AS events
FROM fired JOIN events AS e
  ON e.sigma_time BETWEEN fired.first_seen AND fired.last_seen AND e.user_username <=> fired.user_username
GROUP BY fired.user_username, fired.first_seen, fired.last_seen, fired.temporal_ordered
