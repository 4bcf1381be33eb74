-- The command paths a list is most often ordered by (issue 30): without an index, a page
-- in such an order computes every attempt's value (142 ms at 100,000 attempts, growing
-- with the store). Each index is on exactly the expression `filters.parse_order` makes
-- of the path (the value PostgreSQL folds in from the bound parameter), both directions,
-- NULLs (no number at the path) last, then id, as ListAttempts orders. Other paths are
-- still ordered by computing each attempt's value.
CREATE INDEX attempts_order_lr_desc ON attempts ((
    (jsonb_path_query_first(doc, '$."training_commands"."optimizer"."lr" ? (@.type() == "number")'::jsonpath))::float8
) DESC NULLS LAST, id);
CREATE INDEX attempts_order_lr_asc ON attempts ((
    (jsonb_path_query_first(doc, '$."training_commands"."optimizer"."lr" ? (@.type() == "number")'::jsonpath))::float8
) ASC NULLS LAST, id);
CREATE INDEX attempts_order_batch_desc ON attempts ((
    (jsonb_path_query_first(doc, '$."training_commands"."batch_size" ? (@.type() == "number")'::jsonpath))::float8
) DESC NULLS LAST, id);
CREATE INDEX attempts_order_batch_asc ON attempts ((
    (jsonb_path_query_first(doc, '$."training_commands"."batch_size" ? (@.type() == "number")'::jsonpath))::float8
) ASC NULLS LAST, id);
