WITH matched AS (
  SELECT *, 'kubernetes_serviceaccount_token_minted' AS sigma_rule, `annotations.authentication.kubernetes.io/issued-credential-id` AS credential_id FROM (SELECT * FROM k8s_audit WHERE ((verb='create' AND `objectRef.resource`='serviceaccounts' AND `objectRef.subresource`='token' AND `responseStatus.code`=201) AND ((stage='ResponseComplete' OR stage='Panic') OR stage IS NULL) AND (NOT COALESCE((`user.username` LIKE 'system:node:%' ESCAPE '\' OR `user.username`='system:kube-controller-manager'), 0))) AND (NOT COALESCE(((`user.username`='system:gcp-controller-manager' OR `user.username`='system:gke-controller-manager') OR `user.username` LIKE 'system:serviceaccount:gke-managed-system:%' ESCAPE '\'), 0)))
  UNION ALL BY NAME
  SELECT *, 'kubernetes_serviceaccount_token_used' AS sigma_rule, `user.extra.authentication.kubernetes.io/credential-id`[1] AS credential_id FROM (SELECT * FROM k8s_audit WHERE (`user.username` LIKE 'system:serviceaccount:%' ESCAPE '\' AND len(list_filter(`user.extra.authentication.kubernetes.io/credential-id`, lambda _e: _e LIKE '%' ESCAPE '\')) > 0) AND ((stage='ResponseComplete' OR stage='Panic') OR stage IS NULL))
),
events AS (
  SELECT credential_id AS "credential_id", sigma_rule,
    timezone('UTC', TRY_CAST("requestReceivedTimestamp" AS TIMESTAMPTZ)) AS sigma_time, "auditID" AS sigma_event
  FROM matched WHERE timezone('UTC', TRY_CAST("requestReceivedTimestamp" AS TIMESTAMPTZ)) IS NOT NULL AND credential_id IS NOT NULL
),
chain1 AS (
  SELECT *, CASE WHEN sigma_rule = 'kubernetes_serviceaccount_token_minted' THEN sigma_time END AS sigma_start1
  FROM events
),
chain2 AS (
  SELECT *, CASE WHEN sigma_rule = 'kubernetes_serviceaccount_token_used' THEN max(sigma_start1) OVER (PARTITION BY "credential_id" ORDER BY sigma_time RANGE BETWEEN INTERVAL '3600 seconds' PRECEDING AND INTERVAL '1 microsecond' PRECEDING) END AS sigma_start2
  FROM chain1
),
windows AS (
  SELECT *, sigma_start2 IS NOT NULL AND sigma_time - sigma_start2 <= INTERVAL '3600 seconds' AS sigma_metric,
    min(sigma_start1) OVER (PARTITION BY "credential_id" ORDER BY sigma_time RANGE BETWEEN INTERVAL '3600 seconds' PRECEDING AND CURRENT ROW) AS sigma_window_start
  FROM chain2
),
fired AS (
  SELECT "credential_id", min(sigma_window_start) AS first_seen, max(sigma_time) AS last_seen,
    max(sigma_metric) AS temporal_ordered
  FROM windows WHERE sigma_metric
  GROUP BY ALL
)
SELECT fired.*, (
  SELECT list(struct_pack(rule := e.sigma_rule, auditID := e.sigma_event,
      time := e.sigma_time) ORDER BY e.sigma_time, e.sigma_event)
  FROM (
    SELECT * FROM events AS e
    WHERE e.sigma_time BETWEEN fired.first_seen AND fired.last_seen AND e."credential_id" IS NOT DISTINCT FROM fired."credential_id"
    ORDER BY e.sigma_time, e.sigma_event
  ) AS e
) AS events
FROM fired
ORDER BY first_seen, "credential_id"
