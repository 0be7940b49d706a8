"""The console refuses what the API refuses: NUL in a form field, NaN or lone surrogates in its JSON fields, a host
that ssh would read as an option; and the API still reads a JSON body sent with a form's Content-Type as JSON."""
from __future__ import annotations

import html

from .conftest import text
from .test_console import form_body


def test_a_nul_in_any_form_field_is_a_400_naming_it_and_nothing_is_stored(console, api, cloud):
    for field in ("name", "description", "timezone", "every"):
        resp = console.post("/ui/schedules/new", form_body(cloud["id"], **{field: "a\x00b"}),
                            csrf_from="/ui/schedules/new")
        assert resp.status_code == 400, (field, text(resp))
        assert f"{field}: must not contain NUL" in html.unescape(text(resp)), field
    assert api.get("schedules")[1] == []


def test_a_cloud_forms_json_fields_follow_the_apis_json_rules(console, api):
    for credentials, message in [('{"secret": NaN}', "credentials.secret: NaN is not a JSON number"),
                                 ('{"secret": "ab\\udce9"}', "credentials.secret: must be valid Unicode text"),
                                 ('{"secret": "a\\u0000"}', "credentials.secret: must not contain NUL")]:
        resp = console.post("/ui/clouds", {"title": "aws", "provider": "ec2", "credentials": credentials,
                                           "options": ""}, csrf_from="/ui/clouds")
        assert resp.status_code == 400 and message in html.unescape(text(resp)), (credentials, text(resp))
        assert 'id="credentials-error"' in text(resp)
    assert api.get("clouds")[1] == []


def test_a_machine_host_ssh_would_read_as_an_option_is_refused_by_the_field(console, api, cloud):
    resp = console.post(f"/ui/clouds/{cloud['id']}/machines", {"name": "evil", "host": "-oProxyCommand=touch /tmp/x",
                                                               "port": "22", "ssh_user": "ops", "key_id": ""},
                        csrf_from=f"/ui/clouds/{cloud['id']}")
    assert resp.status_code == 400 and 'id="host-error"' in text(resp), text(resp)
    assert api.get(f"clouds/{cloud['id']}/machines")[1] == []


def test_an_api_json_body_labelled_as_a_form_keeps_a_literal_percent_00(api, schedule_body):
    # curl -d sends JSON as application/x-www-form-urlencoded: it is read as JSON, never form-decoded.
    import json

    status, body, _ = api.call("POST", "schedules", raw=json.dumps(schedule_body(description="100%00 done")),
                               headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200 and body["description"] == "100%00 done", body
