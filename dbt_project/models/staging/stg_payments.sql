with source as (

    select * from {{ source('raw', 'payments') }}

),

renamed as (

    select
        payment_id,
        order_id,
        lower(payment_method) as payment_method,
        lower(payment_status) as payment_status,
        cast(amount_cents / 100.0 as decimal(18, 2)) as amount,
        _loaded_at

    from source

)

select * from renamed
