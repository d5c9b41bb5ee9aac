{#-
    Column masking for PII in views (the Databricks "dynamic view" pattern):
    members of account group `group` see the value, everyone else '***MASKED***'.
    On any other adapter (DuckDB locally) the column is returned unchanged.

        select {{ mask_pii('email') }} as email from ...
-#}
{% macro mask_pii(column, group='pii_readers') -%}
    {{ return(adapter.dispatch('mask_pii', 'lakehouse')(column, group)) }}
{%- endmacro %}

{% macro databricks__mask_pii(column, group) -%}
    case when is_account_group_member('{{ group }}') then {{ column }} else '***MASKED***' end
{%- endmacro %}

{% macro default__mask_pii(column, group) -%}
    {{ column }}
{%- endmacro %}
