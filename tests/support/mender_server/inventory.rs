//! `PUT`/`PATCH /api/devices/v1/inventory/device/attributes`.

use super::*;

use serde_json::Value;

// -- inventory (inventory/devices_v1.yaml, inventory/schemas.yaml Attribute) --

pub(super) fn handle_inventory(ctx: &mut Ctx) -> Response {
    let put = match ctx.req.method.as_str() {
        "PUT" => true,
        "PATCH" => false,
        _ => return ctx.method_not_allowed("PUT, PATCH"),
    };
    let mut st = ctx.shared.lock();
    if put && st.faults.inventory_put_405 {
        return error_response(ctx.shared, 405, "method not allowed").header("Allow", "PATCH");
    }
    let device = match ctx.authenticate(&mut st) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let body = match ctx.json_body(&mut st) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let attrs = match parse_attributes(&body) {
        Ok(a) => a,
        Err(problem) => return ctx.refuse(&mut st, 400, problem),
    };
    let Some(dev) = st.devices.get_mut(&device) else {
        return error_response(ctx.shared, 401, "unknown device");
    };
    if put {
        dev.inventory.clear();
    }
    for a in attrs {
        match dev.inventory.iter_mut().find(|x| x.name == a.name) {
            Some(x) => *x = a,
            None => dev.inventory.push(a),
        }
    }
    dev.inventory_submissions += 1;
    Response::new(200)
}

pub(super) fn parse_attributes(body: &Value) -> Result<Vec<Attribute>, String> {
    let Some(list) = body.as_array() else {
        return Err("inventory body is not a JSON array".into());
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let Some(obj) = item.as_object() else {
            return Err(format!("attribute {i} is not an object"));
        };
        let name = match obj.get("name") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::String(_)) => return Err(format!("attribute {i}: empty name")),
            Some(_) => return Err(format!("attribute {i}: name is not a string")),
            None => return Err(format!("attribute {i}: name missing")),
        };
        let value = match obj.get("value") {
            None => return Err(format!("attribute {name:?}: value missing")),
            Some(v @ (Value::String(_) | Value::Number(_))) => v.clone(),
            Some(v @ Value::Array(items)) => {
                let strings = items.iter().all(Value::is_string);
                let numbers = items.iter().all(Value::is_number);
                if !strings && !numbers {
                    return Err(format!(
                        "attribute {name:?}: value must be an array of strings or of numbers (no mixed arrays)"
                    ));
                }
                v.clone()
            }
            Some(other) => {
                return Err(format!(
                    "attribute {name:?}: value {other} is not a string, number or array"
                ));
            }
        };
        let description = match obj.get("description") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(format!("attribute {name:?}: description is not a string")),
        };
        out.push(Attribute {
            name,
            value,
            description,
        });
    }
    Ok(out)
}
