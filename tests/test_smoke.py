"""A first pass through the main flow: create, log in, read, change password."""

from conftest import bearer, create_instance, login


async def test_login_and_read(admin_client):
    await create_instance(admin_client, "shop1", "pw1")
    token = await login(admin_client, "shop1", "pw1")
    response = await admin_client.get("/instances/shop1/private", headers=bearer(token))
    assert response.status == 200
    body = await response.json()
    assert body["name"] == "Shop shop1"
    assert body["auth"] == {"method": "token"}
    assert len(body["merchant_pub"]) == 52
