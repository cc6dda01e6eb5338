WITH matched AS (
  SELECT *, 'kubernetes_pod_token_minted_by_kubelet' AS sigma_rule, `annotations.authentication.kubernetes.io/issued-credential-id` AS credential_id FROM (SELECT * FROM k8s_audit WHERE (verb='create' AND `objectRef.resource`='serviceaccounts' AND `objectRef.subresource`='token' AND `responseStatus.code`=201 AND `user.username` LIKE 'system:node:%' ESCAPE '\' AND `annotations.authentication.kubernetes.io/issued-credential-id` LIKE 'JTI=%' ESCAPE '\') AND ((stage='ResponseComplete' OR stage='Panic') OR stage IS NULL))
  UNION ALL BY NAME
  SELECT *, 'kubernetes_pod_token_used' AS sigma_rule, `user.extra.authentication.kubernetes.io/credential-id`[1] AS credential_id FROM (SELECT * FROM k8s_audit WHERE (len(list_filter(`user.extra.authentication.kubernetes.io/credential-id`, lambda _e: _e LIKE '%' ESCAPE '\')) > 0 AND len(list_filter(`user.extra.authentication.kubernetes.io/pod-name`, lambda _e: _e LIKE '%' ESCAPE '\')) > 0) AND ((stage='ResponseComplete' OR stage='Panic') OR stage IS NULL))
),
events AS (
  SELECT credential_id AS "credential_id", `sourceIPs`[-1] AS sigma_value, sigma_rule,
    timezone('UTC', TRY_CAST("requestReceivedTimestamp" AS TIMESTAMPTZ)) AS sigma_time, "auditID" AS sigma_event
  FROM matched WHERE timezone('UTC', TRY_CAST("requestReceivedTimestamp" AS TIMESTAMPTZ)) IS NOT NULL AND credential_id IS NOT NULL AND `sourceIPs`[-1] IS NOT NULL
),
windows AS (
  SELECT *, count(DISTINCT sigma_value) OVER (PARTITION BY "credential_id" ORDER BY sigma_time RANGE BETWEEN INTERVAL '3600 seconds' PRECEDING AND CURRENT ROW) AS sigma_metric,
    min(sigma_time) OVER (PARTITION BY "credential_id" ORDER BY sigma_time RANGE BETWEEN INTERVAL '3600 seconds' PRECEDING AND CURRENT ROW) AS sigma_window_start
  FROM events
),
fired AS (
  SELECT "credential_id", min(sigma_window_start) AS first_seen, max(sigma_time) AS last_seen,
    max(sigma_metric) AS value_count
  FROM windows WHERE sigma_metric >= 3
  GROUP BY ALL
)
SELECT fired.*, (
  SELECT list(struct_pack(rule := e.sigma_rule, auditID := e.sigma_event,
      time := e.sigma_time, value := e.sigma_value) ORDER BY e.sigma_time, e.sigma_event)
  FROM (
    SELECT DISTINCT ON (e.sigma_value) * FROM events AS e
    WHERE e.sigma_time BETWEEN fired.first_seen AND fired.last_seen AND e."credential_id" IS NOT DISTINCT FROM fired."credential_id"
    ORDER BY e.sigma_value, e.sigma_time, e.sigma_event
  ) AS e
) AS events
FROM fired
ORDER BY first_seen, "credential_id"
