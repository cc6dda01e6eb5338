WITH matched AS (
  SELECT *, 'kubernetes_serviceaccount_token_minted' AS sigma_rule FROM (SELECT * FROM k8s_audit WHERE ((verb='create' AND `objectRef.resource`='serviceaccounts' AND `objectRef.subresource`='token' AND `responseStatus.code`=201) AND ((stage='ResponseComplete' OR stage='Panic') OR stage IS NULL) AND (NOT COALESCE((`user.username` LIKE 'system:node:%' ESCAPE '\' OR `user.username`='system:kube-controller-manager'), 0))) AND (NOT COALESCE((`user.username` LIKE 'system:serviceaccount:openshift-%' ESCAPE '\'), 0)))
),
events AS (
  SELECT `user.username` AS "user.username", requestURI AS sigma_value, sigma_rule,
    timezone('UTC', TRY_CAST("requestReceivedTimestamp" AS TIMESTAMPTZ)) AS sigma_time, "auditID" AS sigma_event
  FROM matched WHERE timezone('UTC', TRY_CAST("requestReceivedTimestamp" AS TIMESTAMPTZ)) IS NOT NULL AND `user.username` IS NOT NULL AND requestURI IS NOT NULL
),
windows AS (
  SELECT *, count(DISTINCT sigma_value) OVER (PARTITION BY "user.username" ORDER BY sigma_time RANGE BETWEEN INTERVAL '600 seconds' PRECEDING AND CURRENT ROW) AS sigma_metric,
    min(sigma_time) OVER (PARTITION BY "user.username" ORDER BY sigma_time RANGE BETWEEN INTERVAL '600 seconds' PRECEDING AND CURRENT ROW) AS sigma_window_start
  FROM events
),
fired AS (
  SELECT "user.username", min(sigma_window_start) AS first_seen, max(sigma_time) AS last_seen,
    max(sigma_metric) AS value_count
  FROM windows WHERE sigma_metric >= 3
  GROUP BY ALL
)
SELECT fired.*, (
  SELECT list(struct_pack(rule := e.sigma_rule, auditID := e.sigma_event,
      time := e.sigma_time, value := e.sigma_value) ORDER BY e.sigma_time, e.sigma_event)
  FROM (
    SELECT DISTINCT ON (e.sigma_value) * FROM events AS e
    WHERE e.sigma_time BETWEEN fired.first_seen AND fired.last_seen AND e."user.username" IS NOT DISTINCT FROM fired."user.username"
    ORDER BY e.sigma_value, e.sigma_time, e.sigma_event
  ) AS e
) AS events
FROM fired
ORDER BY first_seen, "user.username"
